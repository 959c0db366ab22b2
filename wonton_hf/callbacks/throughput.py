"""`ThroughputMonitor`: tokens per second per device, step time and model FLOPs utilisation (MFU).

FLOPs per token (PaLM, appendix B; the convention MFU figures in Megatron, PaLM and OLMo reports use):

    6 * N  +  12 * L * d * T

N = parameters outside embedding lookups (embedding tables do no matmul; an untied output head counts),
L = blocks, d = hidden size, T = sequence length of the batch rows. `6 N` is forward (2 N) plus backward
(4 N); `12 L d T` is the attention score and value products (QK^T and AV, 2 * 2 * d * T per token and
block, times 3 for forward + backward), counted for the full T x T square as PaLM does although causal
kernels skip about half, and whatever the document boundaries inside packed rows. Activation
recomputation is not counted (it is "hardware" FLOPs, not model FLOPs).

MFU = tokens/s per device * FLOPs per token / peak FLOP/s of the device. The peak comes from
`peak_tflops` if set, else from `PEAK_TFLOPS_BF16` (dense bf16 tensor-core peaks from the vendors' data
sheets) matched against the CUDA device name. On CPU, or an unknown device, MFU is omitted unless
`peak_tflops` is given.

Step time is wall time between consecutive `on_step_end` events (data loading included), minus the time
spent in checkpoint saves, averaged over the steps since the last log. On a GPU the host runs ahead of
the device; the Trainer's own loss logging synchronises at every log, so averages over a logging window
are right even though single steps are not timed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..distributed import is_distributed, world_size
from ._common import LoggingCallback
from .options import ThroughputOptions

logger = logging.getLogger(__name__)

PREFIX = "throughput"

PEAK_TFLOPS_BF16: dict[str, float] = {
    # Matched in this order against the lower-cased `torch.cuda.get_device_name()`: longer names first.
    "gb200": 2500.0,
    "b200": 2250.0,
    "h100 pcie": 756.0,
    "h100 nvl": 835.0,
    "h100": 989.0,  # SXM (HBM3) — the name without a form factor
    "h800": 989.0,
    "h200": 989.0,
    "h20": 148.0,
    "a100": 312.0,
    "a800": 312.0,
    "a40": 149.7,
    "a30": 165.0,
    "a10g": 70.0,
    "a10": 125.0,
    "l40s": 362.0,
    "l40": 181.0,
    "l4": 121.0,
    "rtx 4090": 165.2,
    "rtx 3090": 71.0,
    "mi300x": 1307.0,
    "mi250x": 383.0,
}


def peak_tflops_for(device_name: str) -> float | None:
    name = device_name.lower()
    return next((peak for key, peak in PEAK_TFLOPS_BF16.items() if key in name), None)


def non_embedding_parameters(model: nn.Module) -> int:
    """Parameters that take part in matmuls: everything except `nn.Embedding` tables (ZeRO-3 aware)."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) in embeddings or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += getattr(parameter, "ds_numel", parameter.numel())
    return total


def flops_per_token(model: nn.Module, sequence_length: int) -> float:
    """6 N + 12 L d T (see the module docstring); without `num_hidden_layers`/`hidden_size` only 6 N."""
    config = getattr(model, "config", None)
    layers, hidden = getattr(config, "num_hidden_layers", 0), getattr(config, "hidden_size", 0)
    return 6.0 * non_embedding_parameters(model) + 12.0 * layers * hidden * sequence_length


@dataclass(eq=False)  # identity equality: the Trainer finds callbacks by object
class ThroughputMonitor(LoggingCallback, ThroughputOptions):
    """Tokens/s per device, step time and MFU, averaged over the steps between two log events; options in
    `ThroughputOptions`."""

    def __post_init__(self) -> None:
        super().__init__()
        self.check_options()
        self._handle: Any = None
        self._tokens = 0
        self._tokens_tensor: torch.Tensor | None = None
        self._sequence_length = 0
        self._steps = 0
        self._elapsed = 0.0
        self._last_end: float | None = None
        self._peak: float | None = None
        self._flops_model: nn.Module | None = None
        self._flops_per_token: tuple[int, float] = (0, 0.0)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.enabled or model is None:
            return
        self._handle = model.register_forward_pre_hook(self._count, with_kwargs=True)
        self._flops_model = model
        self._peak = self.peak_tflops
        if self._peak is None and torch.cuda.is_available() and args.device.type == "cuda":
            self._peak = peak_tflops_for(torch.cuda.get_device_name(args.device))
            if self._peak is None:
                logger.warning(
                    "ThroughputMonitor: unknown peak for %s; set `peak_tflops` to log MFU.",
                    torch.cuda.get_device_name(args.device),
                )
        self._last_end = time.perf_counter()

    def _count(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        if ids is None:
            return
        self._sequence_length = ids.shape[1]
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.ndim == 2:  # padding does no useful work: count real tokens (no sync here)
            count = mask.detach().sum()
            self._tokens_tensor = count if self._tokens_tensor is None else self._tokens_tensor + count
        else:
            self._tokens += ids.shape[0] * ids.shape[1]

    def on_step_end(self, args, state, control, **kwargs):
        if not self.enabled or self._last_end is None:
            return
        now = time.perf_counter()
        self._elapsed += now - self._last_end
        self._last_end = now
        self._steps += 1
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            control.should_log = True

    def on_save(self, args, state, control, **kwargs):
        if self._last_end is not None:
            self._last_end = time.perf_counter()  # the checkpoint write is not training time

    def on_evaluate(self, args, state, control, **kwargs):
        if self._last_end is not None:
            self._last_end = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.enabled and self._steps and logs is not None and "loss" in logs:
            self._pending.update(self._window_metrics())
        super().on_log(args, state, control, logs=logs, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _window_metrics(self) -> dict[str, float]:
        tokens = self._tokens + (int(self._tokens_tensor.item()) if self._tokens_tensor is not None else 0)
        step_time = self._elapsed / self._steps
        tokens_per_s = tokens / self._elapsed if self._elapsed > 0 else 0.0
        metrics = {f"{PREFIX}/step_time_s": step_time, f"{PREFIX}/device/tokens_per_s": tokens_per_s}
        world = world_size() if is_distributed() else 1
        metrics[f"{PREFIX}/tokens_per_s"] = tokens_per_s * world  # ranks see equal-sized batches
        if self._flops_model is not None and self._sequence_length:
            if self._flops_per_token[0] != self._sequence_length:  # parameters are counted once per length
                self._flops_per_token = (
                    self._sequence_length,
                    flops_per_token(self._flops_model, self._sequence_length),
                )
            tflops = tokens_per_s * self._flops_per_token[1] / 1e12
            metrics[f"{PREFIX}/device/model_tflops"] = tflops
            if self._peak:
                metrics[f"{PREFIX}/device/mfu"] = tflops / self._peak
        self._tokens, self._tokens_tensor, self._steps, self._elapsed = 0, None, 0, 0.0
        return metrics
