"""`HeldOutEvaluation`: the held-out loss and bits per byte per source, computed inside the Trainer's own evaluation.

The Trainer runs the evaluation (`eval_strategy="steps"`, `eval_steps`, its eval DataLoader sharded over the
ranks, DDP and DeepSpeed alike) over one `EvalWindowDataset` holding every source's fixed windows; this callback
only does the accounting the Trainer cannot: a forward pre-hook takes the `eval_index` of each row off the batch
(and asks Wonton for its per-token loss), a forward hook records each window's summed cross-entropy and scored
token count, and when the Trainer logs the evaluation (`on_log`, on every rank) the records of all ranks are
gathered and turned into `eval_<source>_loss`, `eval_<source>_bpb`, `eval_bpb` and an exact, token-weighted
`eval_loss`. Records are keyed by window, so the rows the eval DataLoader repeats to even out the ranks' last
batches count once. One evaluation is one log event (one metric family `eval/*` in TensorBoard, one console
line), rather than one per source as a dict `eval_dataset` would give.

Bits per byte = summed loss in nats / ln 2 / the UTF-8 bytes of the scored tokens: a tokenizer that cuts text
into more pieces no longer looks better or worse, so sources, languages and runs with other tokenizers compare.
The loss is the plain cross-entropy (without the z-loss terms), the same quantity as `data/loss/<source>`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import TrainerCallback

from ...distributed import gather_object
from ..heldout import EvalWindows
from .tracking import _returns_token_loss, kwargs_hooks


class EvalWindowDataset(Dataset):
    """Every evaluation set's windows in one map-style dataset; each item carries its `eval_index`."""

    def __init__(self, sets: list[EvalWindows]) -> None:
        self.sets = [s for s in sets if s.windows]
        self.names = [s.name for s in self.sets]
        self.items: list[dict[str, Any]] = []
        self.set_of: list[int] = []
        self.scored_bytes: list[int] = []
        for k, s in enumerate(self.sets):
            for window, nbytes in zip(s.windows, s.scored_bytes, strict=True):
                self.items.append(window)
                self.set_of.append(k)
                self.scored_bytes.append(nbytes)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.items[index], "eval_index": index}


@dataclass
class HeldOutEvaluation(TrainerCallback):
    """Per-source held-out loss and bits per byte of each Trainer evaluation over an `EvalWindowDataset`."""

    dataset: EvalWindowDataset
    last_losses: dict[str, float] = field(default_factory=dict, init=False)
    """per-source loss of the latest evaluation (what held-out EXP3 feedback reads in `on_evaluate`)"""
    evaluations: int = field(default=0, init=False)
    _records: dict[int, tuple[float, int]] = field(default_factory=dict, init=False, repr=False)
    _index: torch.Tensor | None = field(default=None, init=False, repr=False)
    _handles: list[Any] = field(default_factory=list, init=False, repr=False)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._handles = kwargs_hooks(self._handles, model, self._pre_hook, self._post_hook)

    def on_train_end(self, args, state, control, **kwargs):
        self._handles = kwargs_hooks(self._handles)

    def _pre_hook(self, module, args, kwargs):
        index = kwargs.pop("eval_index", None)
        self._index = index
        if index is not None and _returns_token_loss(module):
            kwargs["return_token_loss"] = True
        return args, kwargs

    def _post_hook(self, module, args, kwargs, output):
        index, self._index = self._index, None
        labels = kwargs.get("labels")
        if index is None or labels is None:
            return
        with torch.no_grad():
            target = labels[:, 1:]
            valid = target != -100
            token_loss = getattr(output, "token_loss", None)
            if token_loss is not None:
                losses = token_loss[:, :-1].float()
            else:
                logits = output.logits[:, :-1].float()
                losses = F.cross_entropy(logits.transpose(1, 2), target.to(logits.device), reduction="none")
            sums = torch.where(valid.to(losses.device), losses, 0.0).double().sum(dim=1).cpu().tolist()
            counts = valid.sum(dim=1).cpu().tolist()
        for i, s, n in zip(index.cpu().tolist(), sums, counts, strict=True):
            self._records[int(i)] = (float(s), int(n))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "eval_loss" not in logs:
            return
        extra = self.metrics()
        logs.update(extra)
        if state.log_history:
            state.log_history[-1].update(extra)

    def metrics(self) -> dict[str, float]:
        """The metrics of the evaluation just run (a collective: every rank calls it), and a reset."""
        records: dict[int, tuple[float, int]] = {}
        for part in gather_object(self._records):
            records.update(part)
        self._records = {}
        k = len(self.dataset.names)
        nll, tokens, nbytes = [0.0] * k, [0] * k, [0] * k
        for index, (s, n) in records.items():
            which = self.dataset.set_of[index]
            nll[which] += s
            tokens[which] += n
            nbytes[which] += self.dataset.scored_bytes[index]
        out: dict[str, float] = {}
        if sum(tokens):
            out["eval_loss"] = round(sum(nll) / sum(tokens), 4)
        if sum(nbytes):
            out["eval_bpb"] = round(sum(nll) / math.log(2) / sum(nbytes), 4)
        self.last_losses = {}
        for i, name in enumerate(self.dataset.names):
            if tokens[i]:
                self.last_losses[name] = nll[i] / tokens[i]
                out[f"eval_{name}_loss"] = round(nll[i] / tokens[i], 4)
            if nbytes[i]:
                out[f"eval_{name}_bpb"] = round(nll[i] / math.log(2) / nbytes[i], 4)
        self.evaluations += 1
        return out


__all__ = ["EvalWindowDataset", "HeldOutEvaluation"]
