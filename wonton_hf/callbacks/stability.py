"""`StabilityMonitor`: the internals the Wonton report watched to catch divergence early (section 3).

Per block: the maximum attention logit, the mean query norm, the RMS of the gradient of the first MLP
layer and the RMS of the block's output; per model: the mean pre-softmax output logit and the z-loss /
max-z-loss terms the model returns. Per-block metrics are also summarised as max and mean over blocks.

Measured every `every_n_steps` optimizer steps. Hooks exist only during a measured step, so the other
steps pay nothing. The attention logits come from the `probe` submodule every `WontonAttention` has (the
post-QK-LayerNorm, post-RoPE query and key, [B, H, T, D]): fused kernels (sdpa, flex, flash) never
materialise the logits, so the monitor recomputes `q . k * scaling` itself, for a sample of query rows:

    `query_samples` evenly spaced positions per row (always including the last), each against every key
    at or before it in the same document (documents from `position_ids` restarts or `cu_seq_lens_q`;
    padding from a 2-D `attention_mask` is excluded). The result is the exact maximum over those rows, so
    a lower bound of the full maximum; `query_samples: 0` takes every row (exact, costs one extra QK^T).

Costs with S samples: B*H*S*T*D multiply-adds per block, S/T of the attention's own QK^T.

The output head's operator norm (Filatov et al. 2025, "Optimal Scaling Needs Optimal Norm": across model
and data sizes the best learning-rate/batch pair keeps it at one value, so runs can be compared by it) is
logged two ways, from the weight as the optimizer is about to update it: the spectral norm (largest
singular value) by `output_norm_iterations` power-iteration steps warm-started from the previous
measurement's vector (a lower bound that converges over measurements; the vector is not checkpointed, a
resumed run re-converges within a few measurements), and the RMS->inf norm Filatov et al. report,
`sqrt(d_in) * max_i ||W_i||` (exact: the largest logit a unit-RMS input can produce). Cost: one pass over
the head's weight per iteration, V*d multiply-adds, no activations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..distributed import all_reduce
from ._common import LoggingCallback, StepLossCapture, full_tensor, publish_step_metrics
from .options import StabilityOptions

logger = logging.getLogger(__name__)

PREFIX = "stability"


@dataclass
class _Batch:
    documents: torch.Tensor  # B, T: segment id of every position
    valid: torch.Tensor  # B, T: False on padding


def document_ids(kwargs: dict[str, Any], batch: int, length: int, device: torch.device) -> _Batch:
    """Segments and padding of one forward call, from what the model receives (see the module docstring)."""
    position_ids, mask, cu = kwargs.get("position_ids"), kwargs.get("attention_mask"), kwargs.get("cu_seq_lens_q")
    if position_ids is not None:
        documents = (position_ids == 0).long().cumsum(-1).expand(batch, length)
    elif cu is not None:
        starts = torch.zeros(length, dtype=torch.long, device=device)
        starts[cu[1:-1].long()] = 1
        documents = starts.cumsum(0).expand(batch, length)
    else:
        documents = torch.zeros(batch, length, dtype=torch.long, device=device)
    valid = (
        mask.bool()
        if mask is not None and mask.ndim == 2
        else torch.ones(batch, length, dtype=torch.bool, device=device)
    )
    return _Batch(documents.to(device), valid.to(device))


def max_attention_logit(
    query: torch.Tensor, key: torch.Tensor, scaling: float, batch: _Batch, samples: int
) -> torch.Tensor:
    """max over sampled query rows i and allowed keys j <= i of q_i . k_j * scaling (see module docstring)."""
    _, _, length, _ = query.shape  # B, H, T, D
    if samples and samples < length:
        rows = torch.linspace(0, length - 1, samples, device=query.device).round().long().unique()
    else:
        rows = torch.arange(length, device=query.device)
    keys = torch.arange(length, device=query.device)
    best = torch.tensor(float("-inf"), device=query.device)
    for b in range(query.shape[0]):  # one row at a time bounds the extra memory to H*S*T floats
        docs, valid = batch.documents[b], batch.valid[b]
        allowed = (keys[None, :] <= rows[:, None]) & (docs[None, :] == docs[rows][:, None])  # S, T
        allowed &= valid[None, :] & valid[rows][:, None]
        if not allowed.any():
            continue
        logits = query[b, :, rows].float() @ key[b].float().transpose(-1, -2) * scaling  # H, S, T
        best = torch.maximum(best, logits.masked_fill(~allowed, float("-inf")).max())
    return best


def spectral_norm(
    weight: torch.Tensor, iterations: int, vector: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(largest singular value estimate, right singular vector estimate) of `weight` [out, in] by power iteration.

    The start vector is `vector` if it fits, else a fixed-seed random one (so every rank holding the same
    weight gets the same number without communication), with ten times the iterations for that cold start.
    """
    w = weight.detach().float()  # out, in
    if vector is None or vector.shape != (w.shape[1],) or vector.device != w.device:
        generator = torch.Generator(device="cpu").manual_seed(0)
        vector = torch.randn(w.shape[1], generator=generator).to(w.device)
        iterations *= 10
    v = vector / vector.norm().clamp(min=1e-30)
    for _ in range(max(iterations, 1)):
        u = w @ v  # out
        v = w.t() @ u  # in: one step of W^T W
        v = v / v.norm().clamp(min=1e-30)
    return (w @ v).norm(), v


def _rms(tensor: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of squares / width, count) over valid positions, for an RMS averaged over micro-batches."""
    squares = tensor.float().square().mean(-1)  # B, T
    if valid is not None and valid.shape == squares.shape:
        return squares[valid].sum(), valid.sum().float()
    return squares.sum(), torch.tensor(float(squares.numel()), device=squares.device)


def find_layers(model: nn.Module, path: str = "") -> nn.ModuleList:
    """The model's list of blocks: `path` if given, else the longest ModuleList named `layers` or `h`."""
    if path:
        return model.get_submodule(path)
    candidates = [
        m for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and n.rsplit(".", 1)[-1] in ("layers", "h")
    ]
    if not candidates:
        raise ValueError(
            "StabilityMonitor: no `layers`/`h` ModuleList in the model; set `layers_module` to the blocks' path."
        )
    return max(candidates, key=len)


@dataclass(eq=False)  # identity equality: the Trainer finds callbacks by object
class StabilityMonitor(LoggingCallback, StabilityOptions):
    """Attention-logit, query-norm, output-logit, MLP-gradient and block-output statistics every N steps; options in
    `StabilityOptions`."""

    def __post_init__(self) -> None:
        super().__init__()
        self.check_options()
        self._handles: list[Any] = []
        self._losses = StepLossCapture()
        self._batch: _Batch | None = None
        self._stats: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._power_vector: torch.Tensor | None = None

    # -- events ---------------------------------------------------------------------------------------------

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.enabled and model is not None and (state.global_step + 1) % self.every_n_steps == 0:
            self._attach(model)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self._handles:
            return
        self._detach()
        metrics = self._finish(args, model)
        publish_step_metrics(model, state.global_step + 1, metrics)
        self.emit(control, metrics)

    def on_train_end(self, args, state, control, **kwargs):
        self._detach()

    # -- hooks ----------------------------------------------------------------------------------------------

    def _attach(self, model: nn.Module) -> None:
        layers = find_layers(model, self.layers_module)
        self._stats = {"n_layers": len(layers), "max_logit": {}, "qnorm": {}, "block": {}, "out": []}
        self._handles.append(model.register_forward_pre_hook(self._batch_hook, with_kwargs=True))
        for index, layer in enumerate(layers):
            self._handles.append(layer.register_forward_hook(self._block_hook(index)))
            for name, module in layer.named_modules():
                if name.rsplit(".", 1)[-1] == "probe":
                    owner = layer.get_submodule(name.rsplit(".", 1)[0]) if "." in name else layer
                    self._handles.append(module.register_forward_hook(self._probe_hook(index, owner)))
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is not None:
            self._handles.append(head.register_forward_hook(self._logits_hook))
        # A chunked training loss (Wonton's `loss_chunk_size`) never calls the head: it returns `logits_mean`.
        self._handles.append(model.register_forward_hook(self._logits_mean_hook))
        self._losses.attach(model)
        self._handles.append(self._losses)

    def _detach(self) -> None:
        for handle in self._handles:
            handle.detach() if isinstance(handle, StepLossCapture) else handle.remove()
        self._handles = []

    def _batch_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        self._batch = document_ids(kwargs, ids.shape[0], ids.shape[1], ids.device) if ids is not None else None

    def _probe_hook(self, index: int, owner: nn.Module):
        def hook(module: nn.Module, inputs: tuple, output: tuple[torch.Tensor, torch.Tensor]) -> None:
            if not module.training or self._batch is None:
                return
            query, key = output  # B, H, T, D
            with torch.no_grad():
                scaling = getattr(owner, "scaling", query.shape[-1] ** -0.5)
                logit = max_attention_logit(query, key, scaling, self._batch, self.query_samples)
                previous = self._stats["max_logit"].get(index)
                self._stats["max_logit"][index] = logit if previous is None else torch.maximum(previous, logit)
                norms = query.float().norm(dim=-1)  # B, H, T
                valid = self._batch.valid[:, None, :].expand_as(norms)
                self._add(self._stats["qnorm"], index, norms[valid].sum(), valid.sum().float())

        return hook

    def _block_hook(self, index: int):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            if not module.training:
                return
            hidden = output[0] if isinstance(output, tuple) else output  # B, T, C
            with torch.no_grad():
                valid = self._batch.valid if self._batch is not None else None
                self._add(self._stats["block"], index, *_rms(hidden, valid))

        return hook

    def _logits_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not module.training:
            return
        with torch.no_grad():
            per_token = output.float().mean(-1) if output.dtype != torch.float32 else output.mean(-1)  # B, T
            valid = self._batch.valid if self._batch is not None else None
            if valid is not None and valid.shape == per_token.shape:
                self._stats["out"].append((per_token[valid].sum(), valid.sum().float()))
            else:
                self._stats["out"].append(
                    (per_token.sum(), torch.tensor(float(per_token.numel()), device=per_token.device))
                )

    def _logits_mean_hook(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        per_token = getattr(output, "logits_mean", None)
        if module.training and isinstance(per_token, torch.Tensor):
            self._logits_hook(module, inputs, per_token[..., None])  # mean over a size-1 last dim: itself

    @staticmethod
    def _add(table: dict, index: int, total: torch.Tensor, count: torch.Tensor) -> None:
        old = table.get(index)
        table[index] = (total, count) if old is None else (old[0] + total, old[1] + count)

    # -- reduction ------------------------------------------------------------------------------------------

    def _grad_rms(self, model: nn.Module) -> dict[int, torch.Tensor]:
        out = {}
        for index, layer in enumerate(find_layers(model, self.layers_module)):
            try:
                weight = layer.get_submodule(self.mlp_input_module).weight
            except AttributeError:
                self._warn_once(
                    "mlp", f"StabilityMonitor: no `{self.mlp_input_module}` in block {index}; set `mlp_input_module`."
                )
                return {}
            if weight.grad is None:  # DeepSpeed/FSDP keep gradients partitioned, or already stepped
                self._warn_once(
                    "grad",
                    "StabilityMonitor: MLP weight gradients are not materialised here; gradient RMS is not logged.",
                )
                return {}
            # under FSDP2 the gradient is a DTensor shard: its mean is reduced over the shards, then gathered
            out[index] = full_tensor(weight.grad.detach().float().square().mean()).sqrt()
        return out

    def _finish(self, args, model: nn.Module) -> dict[str, float]:
        stats, self._batch = self._stats, None
        families: dict[str, tuple[dict[int, torch.Tensor], str]] = {
            "max_attn_logit": (stats["max_logit"], "max"),
            "query_norm": ({i: t / c.clamp(min=1) for i, (t, c) in stats["qnorm"].items()}, "mean"),
            "block_output_rms": ({i: (t / c.clamp(min=1)).sqrt() for i, (t, c) in stats["block"].items()}, "mean"),
            "mlp_in_grad_rms": (self._grad_rms(model), "mean"),
        }
        metrics: dict[str, float] = {}
        for family, (values, op) in families.items():
            if not values:
                continue
            layers = sorted(values)
            reduced = all_reduce(torch.stack([values[i] for i in layers]).float(), op).tolist()
            for i, value in zip(layers, reduced, strict=True):
                metrics[f"{PREFIX}/{family}/layer_{i}"] = value
            metrics[f"{PREFIX}/{family}/max"] = max(reduced)
            metrics[f"{PREFIX}/{family}/mean"] = sum(reduced) / len(reduced)
        if stats["out"]:
            total = sum(t for t, _ in stats["out"]) / sum(c for _, c in stats["out"]).clamp(min=1)
            metrics[f"{PREFIX}/output_logit_mean"] = all_reduce(total.reshape(1).float(), "mean").item()
        for name, value in self._losses.reduce(args).items():
            if name in ("z_loss", "max_z_loss"):
                metrics[f"{PREFIX}/{name}"] = value
        if self.output_norm_iterations:
            metrics.update(self._output_norms(model))
        if "max_attn_logit" not in {k.split("/")[1] for k in metrics}:
            self._warn_once(
                "probe", "StabilityMonitor: no attention `probe` modules found; attention metrics are not logged."
            )
        return metrics

    def _output_norms(self, model: nn.Module) -> dict[str, float]:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        weight = getattr(head, "weight", None)
        if weight is None or weight.ndim != 2 or weight.numel() == 0:  # ZeRO-3/FSDP shards leave an empty local view
            self._warn_once(
                "head", "StabilityMonitor: no materialised output-head weight; its operator norm is not logged."
            )
            return {}
        with torch.no_grad():
            weight = full_tensor(weight)  # FSDP2: the head gathered from its shards for this measurement
            spectral, self._power_vector = spectral_norm(weight, self.output_norm_iterations, self._power_vector)
            rms_inf = weight.float().norm(dim=1).max() * weight.shape[1] ** 0.5
        return {f"{PREFIX}/output_norm/spectral": spectral.item(), f"{PREFIX}/output_norm/rms_inf": rms_inf.item()}

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)
