"""Per-source training loss from the model's own per-token loss (no second cross-entropy)."""

from __future__ import annotations

import torch

from wonton_hf import WontonConfig, WontonForCausalLM
from wonton_hf.data.callbacks.source_loss import SourceLossMeter
from wonton_hf.data.callbacks.tracking import _returns_token_loss


def _batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 256, (3, 24), generator=generator)
    labels = ids.clone()
    labels[0, :5] = -100
    source_ids = torch.randint(0, 3, (3, 24), generator=generator)
    source_ids[2, 10:] = -1  # padding: no source
    return ids, labels, source_ids


def test_token_loss_path_equals_the_logits_path():
    """The per-token loss of a training step (the chunked head, which returns no logits) accounts each source's
    loss as a cross-entropy over the full logits of the same batch does."""
    model = WontonForCausalLM(
        WontonConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    ).train()
    ids, labels, source_ids = _batch()
    assert _returns_token_loss(model)
    out = model(input_ids=ids, labels=labels, return_token_loss=True)
    assert out.logits is None  # the training step's head is chunked
    logits = model(input_ids=ids, labels=labels, return_logits=True).logits
    from_tokens, from_logits = SourceLossMeter(3), SourceLossMeter(3)
    from_tokens.add_token_losses(out.token_loss, labels, source_ids)
    from_logits.add(logits, labels, source_ids)
    for window in ("take_for_log", "take_for_feedback"):
        (sums_a, counts_a), (sums_b, counts_b) = getattr(from_tokens, window)(), getattr(from_logits, window)()
        assert torch.equal(counts_a, counts_b) and counts_a.sum() > 0
        torch.testing.assert_close(sums_a, sums_b, rtol=1e-5, atol=1e-5)
    assert from_tokens.log_metrics(["a", "b", "c"]) == {}  # taken: the window starts again


def test_models_without_token_loss_fall_back_to_the_logits():
    assert not _returns_token_loss(torch.nn.Linear(2, 2))
