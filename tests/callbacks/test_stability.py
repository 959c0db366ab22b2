"""StabilityMonitor's numbers against the same quantities computed by hand (eager attention, written out)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wonton_hf.callbacks import StabilityMonitor
from wonton_hf.callbacks.stability import max_attention_logit
from wonton_hf.models.wonton.modeling_wonton import apply_rotary_pos_emb

from .helpers import events, packed_batch, tiny_model


def by_hand(model, batch) -> dict[str, float]:
    """Every monitored quantity from the model's weights, with attention written out (eager)."""
    ids, positions = batch["input_ids"], batch["position_ids"]
    B, T = ids.shape
    documents = (positions == 0).long().cumsum(-1)
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool)) & (
        documents[:, :, None] == documents[:, None, :]
    )  # B, T, T
    inner = model.model
    hidden = inner.embed_tokens(ids)
    cos, sin = inner.rotary_emb(hidden, positions)
    out: dict[str, float] = {}
    for i, layer in enumerate(inner.layers):
        attn = layer.self_attn
        q, k, v = attn.qkv_proj(layer.input_layernorm(hidden)).chunk(3, dim=-1)
        shape = (B, T, -1, attn.head_dim)
        q, k, v = attn.q_norm(q.view(shape)), attn.k_norm(k.view(shape)), v.view(shape)
        q, k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)  # B, H, T, D
        logits = q @ k.transpose(-1, -2) * attn.scaling  # B, H, T, T
        masked = logits.masked_fill(~allowed[:, None], float("-inf"))
        out[f"stability/max_attn_logit/layer_{i}"] = masked.max().item()
        out[f"stability/query_norm/layer_{i}"] = q.norm(dim=-1).mean().item()
        mixed = (masked.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, -1)
        hidden = hidden + attn.o_proj(mixed)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        out[f"stability/block_output_rms/layer_{i}"] = hidden.square().mean().sqrt().item()
    logits = model.lm_head(inner.norm(hidden))
    out["stability/output_logit_mean"] = logits.mean().item()
    flat, targets = logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
    out["stability/z_loss"] = flat.logsumexp(-1).square().mean().item()
    out["stability/max_z_loss"] = flat.max(-1).values.square().mean().item()
    z, max_z = flat.logsumexp(-1).square().mean(), flat.max(-1).values.square().mean()
    loss = F.cross_entropy(flat, targets) + model.config.z_loss_coef * z + model.config.max_z_loss_coef * max_z
    loss.backward()
    for i, layer in enumerate(inner.layers):
        out[f"stability/mlp_in_grad_rms/layer_{i}"] = layer.mlp.up_proj.weight.grad.square().mean().sqrt().item()
    model.zero_grad()
    return out


def monitored_step(model, batch, monitor: StabilityMonitor) -> dict[str, float]:
    args, state, control = events()
    state.global_step = monitor.every_n_steps - 1  # the next step is a measured one
    monitor.on_step_begin(args, state, control, model=model)
    model(**batch).loss.backward()
    monitor.on_pre_optimizer_step(args, state, control, model=model)
    assert control.should_log, "a measured step must request a log event"
    model.zero_grad()
    return dict(monitor._pending)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_numbers_match_hand_computation_on_sdpa(batch_size):
    model = tiny_model("sdpa").train()
    batch = packed_batch(batch_size)
    expected = by_hand(model, batch)
    got = monitored_step(model, batch, StabilityMonitor(every_n_steps=1, query_samples=0))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for family in ("max_attn_logit", "query_norm", "block_output_rms", "mlp_in_grad_rms"):
        layers = [expected[f"stability/{family}/layer_{i}"] for i in range(2)]
        assert got[f"stability/{family}/max"] == pytest.approx(max(layers), rel=1e-4)
        assert got[f"stability/{family}/mean"] == pytest.approx(sum(layers) / 2, rel=1e-4)


def test_hand_computation_is_the_eager_model():
    """The written-out forward above is the model: its logits equal the eager implementation's."""
    model = tiny_model("eager")
    batch = packed_batch(2)
    with torch.no_grad():
        eager = model(**batch).logits
        hand = by_hand_logits(model, batch)
    torch.testing.assert_close(hand, eager, rtol=1e-4, atol=1e-5)


def by_hand_logits(model, batch):
    captured = {}
    original = model.lm_head.forward
    model.lm_head.forward = lambda x: captured.setdefault("logits", original(x))
    try:
        with torch.enable_grad():
            by_hand(model, batch)
    finally:
        del model.lm_head.forward
    return captured["logits"]


def test_document_boundaries_exclude_cross_document_pairs():
    """A huge logit planted across documents must not count; within a document it must."""
    q = torch.zeros(1, 1, 4, 2)
    k = torch.zeros(1, 1, 4, 2)
    q[0, 0, 3] = torch.tensor([10.0, 0.0])
    k[0, 0, 0] = torch.tensor([10.0, 0.0])  # position 0 is in the first document, the query in the second
    from wonton_hf.callbacks.stability import _Batch

    two_docs = _Batch(documents=torch.tensor([[1, 1, 2, 2]]), valid=torch.ones(1, 4, dtype=torch.bool))
    one_doc = _Batch(documents=torch.tensor([[1, 1, 1, 1]]), valid=torch.ones(1, 4, dtype=torch.bool))
    assert max_attention_logit(q, k, 1.0, two_docs, samples=0).item() == 0.0
    assert max_attention_logit(q, k, 1.0, one_doc, samples=0).item() == 100.0


def test_sampled_rows_are_a_lower_bound_and_exact_on_their_rows():
    model = tiny_model("sdpa").train()
    batch = packed_batch(2)
    exact = monitored_step(model, batch, StabilityMonitor(every_n_steps=1, query_samples=0))
    sampled = monitored_step(model, batch, StabilityMonitor(every_n_steps=1, query_samples=4))
    for i in range(2):
        key = f"stability/max_attn_logit/layer_{i}"
        assert sampled[key] <= exact[key] + 1e-6


def test_flex_attention_gives_the_sdpa_numbers():
    """Flex attention has no CPU backward: compare the forward-only statistics (probe hooks) to sdpa."""
    from transformers.utils import is_torch_flex_attn_available

    if not is_torch_flex_attn_available():  # the only reason to skip: any error of the forward is a failure
        pytest.skip("this torch build has no flex attention")
    batch = packed_batch(2)
    results = {}
    for attn in ("sdpa", "flex_attention"):
        model = tiny_model(attn).train()
        monitor = StabilityMonitor(every_n_steps=1, query_samples=0)
        args, state, control = events()
        monitor.on_step_begin(args, state, control, model=model)
        with torch.no_grad():
            model(**batch)
        monitor._grad_rms = lambda model: {}
        monitor.on_pre_optimizer_step(args, state, control, model=model)
        results[attn] = monitor._pending
    for key in (k for k in results["sdpa"] if "attn_logit" in k or "query_norm" in k or "block_output" in k):
        assert results["flex_attention"][key] == pytest.approx(results["sdpa"][key], rel=1e-4), key


def test_only_measured_steps_have_hooks():
    model = tiny_model("sdpa").train()
    monitor = StabilityMonitor(every_n_steps=3)
    args, state, control = events()
    for step in range(5):
        state.global_step = step
        monitor.on_step_begin(args, state, control, model=model)
        assert bool(monitor._handles) == ((step + 1) % 3 == 0)
        monitor.on_pre_optimizer_step(args, state, control, model=model)
        assert not monitor._handles
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_bad_options_fail_early():
    with pytest.raises(ValueError, match="every_n_steps"):
        StabilityMonitor(every_n_steps=0)
    with pytest.raises(ValueError, match="query_samples"):
        StabilityMonitor(query_samples=-1)


def test_output_head_norms_match_exact_values():
    """Spectral norm by power iteration against the SVD; RMS->inf norm against its definition."""
    model = tiny_model("sdpa").train()
    generator = torch.Generator().manual_seed(0)
    rows, cols = model.lm_head.weight.shape
    with torch.no_grad():  # a dominant direction, as training makes one, on top of the random init
        model.lm_head.weight += (
            0.05 * torch.randn(rows, 1, generator=generator) @ torch.randn(1, cols, generator=generator)
        )
    weight = model.lm_head.weight.detach()
    exact = torch.linalg.matrix_norm(weight, ord=2).item()
    got = monitored_step(model, packed_batch(2), StabilityMonitor(every_n_steps=1))
    assert got["stability/output_norm/spectral"] <= exact * (1 + 1e-5)  # power iteration never overshoots
    assert got["stability/output_norm/spectral"] == pytest.approx(exact, rel=1e-4)
    assert got["stability/output_norm/rms_inf"] == pytest.approx(weight.norm(dim=1).max().item() * cols**0.5, rel=1e-5)


def test_power_iteration_is_warm_started_across_measurements():
    """On a flat spectrum (the random init) one iteration per measurement keeps climbing towards the exact
    value: each measurement continues from the last one's vector instead of starting over."""
    model = tiny_model("sdpa").train()
    exact = torch.linalg.matrix_norm(model.lm_head.weight.detach(), ord=2).item()
    monitor = StabilityMonitor(every_n_steps=1, output_norm_iterations=1)
    values = [monitored_step(model, packed_batch(2), monitor)["stability/output_norm/spectral"] for _ in range(4)]
    assert values[0] < values[1] < values[2] < values[3] <= exact * (1 + 1e-5)


def test_output_norm_follows_the_weights_and_can_be_turned_off():
    model = tiny_model("sdpa").train()
    monitor = StabilityMonitor(every_n_steps=1)
    before = monitored_step(model, packed_batch(2), monitor)["stability/output_norm/spectral"]
    with torch.no_grad():
        model.lm_head.weight *= 3.0
    after = monitored_step(model, packed_batch(2), monitor)["stability/output_norm/spectral"]
    assert after == pytest.approx(3.0 * before, rel=1e-3)
    off = monitored_step(model, packed_batch(2), StabilityMonitor(every_n_steps=1, output_norm_iterations=0))
    assert not any(key.startswith("stability/output_norm/") for key in off)
    with pytest.raises(ValueError, match="output_norm_iterations"):
        StabilityMonitor(output_norm_iterations=-1)
