"""The chunked output-head loss against the unchunked fused loss (full logits): same numbers, same gradients.

Float64 throughout where equality is asserted, so the tolerance (1e-6) measures the algorithm, not rounding.
"""

from __future__ import annotations

import copy

import pytest
import torch

from wonton_hf import WontonConfig, WontonForCausalLM
from wonton_hf.models.wonton.modeling_wonton import chunked_language_model_loss, language_model_loss

TOL = dict(atol=1e-6, rtol=1e-6)


def model_pair(
    seed: int = 0, vocab: int = 97, chunk: int = 5, **overrides
) -> tuple[WontonForCausalLM, WontonForCausalLM]:
    """(chunked, unchunked) copies of one float64 model with non-trivial biases and large-ish logits."""
    torch.manual_seed(seed)
    fields = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        z_loss_coef=1e-2,
        max_z_loss_coef=3e-2,  # large coefficients: a wrong z / max-z gradient cannot hide
        loss_chunk_size=chunk,
    )
    model = WontonForCausalLM(WontonConfig(**{**fields, **overrides})).double().train()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
        model.lm_head.weight.mul_(20)  # logits of a few units: softmax far from uniform
    reference = copy.deepcopy(model)
    reference.config.loss_chunk_size = 0
    return model, reference


def assert_same_step(model, reference, **inputs) -> None:
    out = model(**inputs, return_token_loss=True)
    ref = reference(**inputs, return_token_loss=True)
    assert out.logits is None and ref.logits is not None
    for name in ("loss", "ce_loss", "z_loss", "max_z_loss", "token_loss"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name).detach(), **TOL, msg=name)
    out.loss.backward()
    ref.loss.backward()
    for (name, param), ref_param in zip(model.named_parameters(), reference.parameters(), strict=True):
        if param.requires_grad:
            assert param.grad is not None, name
            torch.testing.assert_close(param.grad, ref_param.grad, **TOL, msg=name)


@pytest.mark.parametrize("chunk", [1, 3, 4, 7, 16, 1000])  # 4 and 16 divide the 2 x 8 tokens, 3 and 7 do not
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_and_every_gradient_equal_the_unchunked_path(chunk, seed):
    generator = torch.Generator().manual_seed(seed)
    batch, seq = 2, 8
    model, reference = model_pair(seed=seed, chunk=chunk, vocab=int(torch.randint(50, 130, (1,), generator=generator)))
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=generator)
    labels = ids.clone()
    labels[0, : int(torch.randint(0, seq, (1,), generator=generator))] = -100
    assert_same_step(model, reference, input_ids=ids, labels=labels)


@pytest.mark.parametrize("skip_ignored", [True, False])
@pytest.mark.parametrize("chunk", [2, 3, 5])
def test_all_ignored_chunks_and_rows(skip_ignored, chunk):
    """Whole chunks of -100 (the loop sees them when ignored rows are not skipped, as under torch.compile)."""
    torch.manual_seed(3)
    hidden = torch.randn(3, 6, 8, dtype=torch.float64, requires_grad=True)
    weight = (torch.randn(11, 8, dtype=torch.float64) * 2).requires_grad_()
    bias = torch.randn(11, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (3, 6))
    labels[0] = -100  # a whole row: with chunk <= 5 at least one chunk holds nothing to score
    labels[1, :4] = -100
    loss, ce, z, max_z, token_ce = chunked_language_model_loss(
        hidden, weight, bias, labels, z_loss_coef=0.1, max_z_loss_coef=0.2, chunk_size=chunk, skip_ignored=skip_ignored
    )
    loss.backward()
    grads = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    logits = hidden @ weight.T + bias
    ref_ce, ref_z, ref_max_z, ref_token = language_model_loss(logits, labels, return_token_loss=True)
    (ref_ce + 0.1 * ref_z + 0.2 * ref_max_z).backward()
    for got, want in ((ce, ref_ce), (z, ref_z), (max_z, ref_max_z), (token_ce, ref_token)):
        torch.testing.assert_close(got, want.detach(), **TOL)
    for got, t in zip(grads, (hidden, weight, bias), strict=True):
        torch.testing.assert_close(got, t.grad, **TOL)


def test_a_batch_with_no_label_gives_a_zero_loss_that_still_backpropagates():
    model, reference = model_pair(chunk=4)
    ids = torch.randint(0, 97, (2, 6))
    labels = torch.full_like(ids, -100)
    assert_same_step(model, reference, input_ids=ids, labels=labels)
    assert model.lm_head.weight.grad.abs().max() == 0


@pytest.mark.parametrize("chunk", [3, 8])
def test_packed_rows(chunk):
    model, reference = model_pair(chunk=chunk)
    ids = torch.randint(0, 97, (2, 12))
    positions = torch.cat([torch.arange(5), torch.arange(7)]).expand(2, 12).clone()
    labels = ids.clone()
    labels[:, 5] = -100  # the first token of the second document is not predicted from the first one
    assert_same_step(model, reference, input_ids=ids, labels=labels, position_ids=positions)


def test_padding_free_one_row_with_shift_labels_and_no_bias():
    model, reference = model_pair(chunk=4, use_bias=False)
    assert model.lm_head.bias is None
    ids = torch.randint(0, 97, (1, 15))
    shift_labels = torch.randint(0, 97, (1, 15))
    shift_labels[0, [4, 9, 14]] = -100
    assert_same_step(model, reference, input_ids=ids, shift_labels=shift_labels)


def test_num_items_in_batch_under_gradient_accumulation():
    """Two micro-batches divided by the step's token count sum to the whole batch, chunked or not."""
    model, reference = model_pair(chunk=3)
    ids = torch.randint(0, 97, (2, 9))
    labels = ids.clone()
    labels[1, :3] = -100
    total = int((labels[:, 1:] != -100).sum())
    for net in (model, reference):
        for row in (0, 1):
            net(input_ids=ids[row : row + 1], labels=labels[row : row + 1], num_items_in_batch=total).loss.backward()
    whole, _ = model_pair(chunk=0)
    whole(input_ids=ids, labels=labels).loss.backward()
    for net in (model, reference):
        for param, expected in zip(net.parameters(), whole.parameters(), strict=True):
            torch.testing.assert_close(param.grad, expected.grad, **TOL)
    halves = [model(input_ids=ids[r : r + 1], labels=labels[r : r + 1], num_items_in_batch=total) for r in (0, 1)]
    full = whole(input_ids=ids, labels=labels)
    for name in ("loss", "ce_loss", "z_loss", "max_z_loss"):
        torch.testing.assert_close(sum(getattr(h, name) for h in halves), getattr(full, name).detach(), **TOL)


def test_token_loss_for_per_source_accounting():
    model, reference = model_pair(chunk=5)
    ids = torch.randint(0, 97, (3, 7))
    labels = ids.clone()
    labels[2, 2:] = -100
    out = model(input_ids=ids, labels=labels, return_token_loss=True)
    ref = reference(input_ids=ids, labels=labels, return_token_loss=True)
    assert out.token_loss.shape == labels.shape and not out.token_loss.requires_grad
    torch.testing.assert_close(out.token_loss, ref.token_loss, **TOL)
    assert torch.all(out.token_loss[:, -1] == 0) and torch.all(out.token_loss[2, 1:] == 0)
    assert model(input_ids=ids, labels=labels).token_loss is None


def test_logits_are_kept_where_something_needs_them():
    model, _ = model_pair(chunk=4)
    ids = torch.randint(0, 97, (2, 6))
    assert model(input_ids=ids).logits.shape == (2, 6, 97)  # no labels: generation, scoring
    with torch.no_grad():
        assert model(input_ids=ids, labels=ids).logits is not None  # evaluation under no_grad
        chunked = model(input_ids=ids, labels=ids, return_logits=False)  # memory-light evaluation loss
        assert chunked.logits is None and not chunked.loss.requires_grad
    assert model.eval()(input_ids=ids, labels=ids).logits is not None  # eval mode keeps the logits
    model.train()
    assert model(input_ids=ids, labels=ids, return_logits=True).logits is not None
    trained = model(input_ids=ids, labels=ids)
    assert trained.logits is None and trained.loss.requires_grad and not trained.ce_loss.requires_grad
    torch.testing.assert_close(trained.logits_mean, model.lm_head(model.model(ids).last_hidden_state).mean(-1).float())


def test_logits_to_keep_as_in_transformers_models():
    model, reference = model_pair(chunk=3)
    ids = torch.randint(0, 97, (2, 9))
    assert model(input_ids=ids, logits_to_keep=1).logits.shape == (2, 1, 97)
    # With labels the kept positions are what is scored; labels must match them (as for in-tree models).
    labels = ids[:, -4:]
    assert_same_step(model, reference, input_ids=ids, labels=labels, logits_to_keep=4)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(input_ids=ids, labels=ids, logits_to_keep=4)


def test_frozen_head_and_backward_only_once():
    model, reference = model_pair(chunk=4)
    for net in (model, reference):
        net.lm_head.requires_grad_(False)
    ids = torch.randint(0, 97, (2, 7))
    assert_same_step(model, reference, input_ids=ids, labels=ids)
    assert model.lm_head.weight.grad is None
    out = model(input_ids=ids, labels=ids)
    out.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        out.loss.backward()


def test_gradient_checkpointing():
    model, reference = model_pair(chunk=5)
    model.activation_checkpointing_enable()
    reference.activation_checkpointing_enable()
    ids = torch.randint(0, 97, (2, 8))
    assert_same_step(model, reference, input_ids=ids, labels=ids)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_accumulates_in_fp32_and_matches_the_unchunked_path(dtype):
    model, reference = model_pair(chunk=3)
    model.float(), reference.float()
    ids = torch.randint(0, 97, (2, 8))
    with torch.autocast("cpu", dtype=dtype):
        out = model(input_ids=ids, labels=ids, return_token_loss=True)
        ref = reference(input_ids=ids, labels=ids, return_token_loss=True)
    assert out.loss.dtype == torch.float32 and out.token_loss.dtype == torch.float32
    tolerance = dict(atol=2e-2, rtol=2e-2)  # both run the head matmul in the autocast dtype
    for name in ("loss", "ce_loss", "z_loss", "max_z_loss", "token_loss"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name).detach(), **tolerance, msg=name)
    out.loss.backward()
    ref.loss.backward()
    for (name, param), ref_param in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert param.grad.dtype == torch.float32
        scale = ref_param.grad.abs().max().clamp(min=1e-3)
        assert (param.grad - ref_param.grad).abs().max() / scale < 5e-2, name


def test_torch_compile_gives_the_same_step():
    model, reference = model_pair(chunk=5)
    ids = torch.randint(0, 97, (2, 8))
    labels = ids.clone()
    labels[0, :3] = -100
    compiled = torch.compile(model, backend="aot_eager")
    out = compiled(input_ids=ids, labels=labels, return_token_loss=True)
    ref = reference(input_ids=ids, labels=labels, return_token_loss=True)
    assert out.logits is None
    for name in ("loss", "ce_loss", "z_loss", "max_z_loss", "token_loss"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name).detach(), **TOL, msg=name)
    out.loss.backward()
    ref.loss.backward()
    for param, ref_param in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref_param.grad, **TOL)


def test_config_field_round_trips_and_is_validated(tmp_path):
    assert WontonConfig().loss_chunk_size == 1024
    config = WontonConfig(loss_chunk_size=0)
    config.save_pretrained(tmp_path)
    assert WontonConfig.from_pretrained(tmp_path).loss_chunk_size == 0
    with pytest.raises(ValueError, match="loss_chunk_size"):
        WontonConfig(loss_chunk_size=-1)
