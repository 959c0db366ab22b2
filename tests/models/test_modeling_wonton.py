import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForCausalLM, DataCollatorWithFlattening

import wonton_hf  # noqa: F401  (registers the Auto classes)
from wonton_hf import WontonConfig, WontonForCausalLM, WontonModel
from wonton_hf.models.wonton.modeling_wonton import WontonAttentionProbe, WontonDecoderLayer

VOCAB = 512


def tiny_config(**overrides) -> WontonConfig:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
    )
    return WontonConfig(**{**fields, **overrides})


def tiny_model(seed: int = 0, **overrides) -> WontonForCausalLM:
    torch.manual_seed(seed)
    model = WontonForCausalLM(tiny_config(**overrides)).eval()
    with torch.no_grad():  # non-zero biases and norms so that a wrong mapping cannot hide behind the init
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def tokens(*shape, seed=1):
    return torch.randint(4, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def test_forward_backward_shapes():
    model = tiny_model().train()
    ids = tokens(3, 10)
    out = model(input_ids=ids, labels=ids)
    assert out.logits is None and out.logits_mean.shape == (3, 10)  # a training step: the chunked head
    assert model(input_ids=ids, labels=ids, return_logits=True).logits.shape == (3, 10, VOCAB)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    hidden = model.model(input_ids=ids, output_hidden_states=True)
    assert hidden.last_hidden_state.shape == (3, 10, 64)
    assert len(hidden.hidden_states) == 3  # embeddings + one per layer


def test_init_follows_the_scaled_rule():
    model = WontonForCausalLM(tiny_config(num_hidden_layers=8, hidden_size=256, intermediate_size=1024))
    layer = model.model.layers[0]
    scaled = 0.02 / math.sqrt(2 * 8)
    assert layer.self_attn.o_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert layer.mlp.down_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert layer.mlp.up_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(layer.self_attn.qkv_proj.bias == 0) and torch.all(model.lm_head.bias == 0)
    assert torch.all(layer.self_attn.q_norm.weight == 1) and torch.all(model.model.norm.bias == 0)
    plain = WontonForCausalLM(
        tiny_config(num_hidden_layers=8, hidden_size=256, intermediate_size=1024, scaled_residual_init=False)
    )
    assert plain.model.layers[0].self_attn.o_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_untied_head_with_bias_and_qk_norm_over_head_dim():
    model = tiny_model()
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert model.lm_head.bias.shape == (VOCAB,)
    assert model.model.layers[0].self_attn.q_norm.weight.shape == (16,)


def test_loss_components_match_a_hand_computation():
    model = tiny_model(z_loss_coef=1e-3, max_z_loss_coef=2e-4)
    ids = tokens(2, 9)
    labels = ids.clone()
    labels[0, :4] = -100  # padding/prompt tokens take part in no term
    out = model(input_ids=ids, labels=labels)
    logits = out.logits[:, :-1].float()
    target = labels[:, 1:]
    keep = target != -100
    ce = F.cross_entropy(logits[keep], target[keep])
    z = torch.logsumexp(logits, -1)[keep].pow(2).mean()
    max_z = logits.max(-1).values[keep].pow(2).mean()
    torch.testing.assert_close(out.ce_loss, ce)
    torch.testing.assert_close(out.z_loss, z)
    torch.testing.assert_close(out.max_z_loss, max_z)
    torch.testing.assert_close(out.loss, ce + 1e-3 * z + 2e-4 * max_z)


def test_zero_coefficients_leave_only_cross_entropy_but_terms_are_still_reported():
    out = tiny_model(z_loss_coef=0.0, max_z_loss_coef=0.0)(input_ids=tokens(1, 5), labels=tokens(1, 5))
    assert out.z_loss > 0 and out.max_z_loss > 0  # for the monitors
    torch.testing.assert_close(out.loss, out.ce_loss)


def test_fused_loss_gradient_equals_autograd_of_the_plain_formula():
    """The hand-written backward of the fused loss against autograd through the textbook expressions."""
    from wonton_hf.models.wonton.modeling_wonton import language_model_loss

    torch.manual_seed(0)
    logits = (torch.randn(3, 7, 11, dtype=torch.float64) * 3).requires_grad_()
    labels = torch.randint(0, 11, (3, 7))
    labels[1, 2:5] = -100
    weights = torch.tensor([1.0, 1e-1, 3e-1], dtype=torch.float64)  # arbitrary, to see each term's gradient
    ce, z, max_z = language_model_loss(logits, labels, num_items_in_batch=9)
    (weights[0] * ce + weights[1] * z + weights[2] * max_z).backward()
    fused_grad = logits.grad.clone()
    logits.grad = None
    flat, target = logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1)
    keep = target != -100
    lse = torch.logsumexp(flat[keep], -1)
    reference = (
        F.cross_entropy(flat[keep], target[keep], reduction="sum") * weights[0]
        + lse.square().sum() * weights[1]
        + flat[keep].max(-1).values.square().sum() * weights[2]
    ) / 9
    reference.backward()
    torch.testing.assert_close(fused_grad, logits.grad)


def test_regularisers_share_the_cross_entropy_denominator_under_accumulation():
    model = tiny_model()
    ids = tokens(2, 8)
    full = model(input_ids=ids, labels=ids)
    halves = [
        model(input_ids=ids[i : i + 1], labels=ids[i : i + 1], num_items_in_batch=torch.tensor(14)) for i in (0, 1)
    ]
    torch.testing.assert_close(sum(h.loss for h in halves), full.loss)
    torch.testing.assert_close(sum(h.max_z_loss for h in halves), full.max_z_loss)


def _packed_inputs():
    docs = [tokens(1, 7, seed=2), tokens(1, 5, seed=3), tokens(1, 9, seed=4)]
    packed = torch.cat(docs, dim=1)
    positions = torch.cat([torch.arange(d.shape[1]) for d in docs]).unsqueeze(0)
    return docs, packed, positions


def _assert_packed_equals_separate(model, **packed_kwargs):
    docs, packed, positions = _packed_inputs()
    with torch.no_grad():
        alone = [model(input_ids=d).logits for d in docs]
        together = model(input_ids=packed, position_ids=positions, **packed_kwargs).logits
    start = 0
    for logits in alone:
        end = start + logits.shape[1]
        torch.testing.assert_close(together[:, start:end], logits, atol=1e-5, rtol=1e-5)
        start = end


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("position_embedding_type", ["rope", "learned"])
def test_packed_rows_never_attend_across_documents(impl, position_embedding_type):
    model = tiny_model(position_embedding_type=position_embedding_type)
    model.set_attn_implementation(impl)
    _assert_packed_equals_separate(model)
    # The two cases transformers' own detection misses: an explicit all-ones mask, and a cache.
    _, packed, _ = _packed_inputs()
    _assert_packed_equals_separate(model, attention_mask=torch.ones_like(packed))
    _assert_packed_equals_separate(model, use_cache=True)


def test_packed_rows_on_flex_attention():
    model = tiny_model()
    model.set_attn_implementation("flex_attention")
    _assert_packed_equals_separate(model)
    _, packed, _ = _packed_inputs()
    _assert_packed_equals_separate(model, attention_mask=torch.ones_like(packed))


def test_flattening_collator_kwargs_are_accepted():
    """`DataCollatorWithFlattening` output (cu_seq_lens / max_length kwargs) gives the per-document logits."""
    model = tiny_model()
    docs, _, _ = _packed_inputs()
    features = [{"input_ids": d[0].tolist()} for d in docs]
    for with_positions in (True, False):
        batch = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_position_ids=with_positions)(features)
        batch.pop("labels")
        with torch.no_grad():
            together = model(**batch).logits
        alone = torch.cat([model(input_ids=d).logits for d in docs], dim=1)
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_matches_unpadded_rows():
    model = tiny_model()
    short, long = tokens(1, 4, seed=5), tokens(1, 7, seed=6)
    ids = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        torch.testing.assert_close(batch[0, 3:], model(input_ids=short).logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch[1], model(input_ids=long).logits[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position_embedding_type", ["rope", "learned"])
def test_greedy_generation_with_and_without_cache_agree(position_embedding_type):
    model = tiny_model(position_embedding_type=position_embedding_type)
    prompt = tokens(2, 6)
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = model.generate(prompt, use_cache=True, **kwargs)
    uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert cached.shape == (2, 18)
    assert torch.equal(cached, uncached)


def test_cached_logits_equal_full_forward():
    model = tiny_model()
    ids = tokens(1, 10)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        first = model(input_ids=ids[:, :6], use_cache=True)
        rest = model(input_ids=ids[:, 6:], cache=first.cache).logits
    torch.testing.assert_close(rest, full[:, 6:], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = tokens(2, 12)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(seed=3).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_save_and_load_through_auto_classes(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "config.json", "configuration_wonton.py", "modeling_wonton.py"} <= files
    assert "architecture_wonton.py" in files  # configuration_wonton.py's relative import, exported with it
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is WontonForCausalLM
    ids = tokens(1, 8)
    with torch.no_grad():  # RoPE buffers must be recomputed after meta-device loading
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert type(AutoModel.from_pretrained(tmp_path)) is WontonModel
    mapped = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="auto")
    with torch.no_grad():
        torch.testing.assert_close(mapped(input_ids=ids).logits, model(input_ids=ids).logits)


def test_trust_remote_code_load_without_the_package(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    ids = tokens(1, 8)
    with torch.no_grad():
        torch.save(model(input_ids=ids).logits, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["wonton_hf"] = None  # any import of the package now fails
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        ids = torch.tensor({ids.tolist()})
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, torch.load({str(tmp_path / "expected.pt")!r}))
        print("remote-ok")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert "remote-ok" in result.stdout, result.stderr[-3000:]


HALF_TOLERANCES = {
    # (logits: max abs difference, loss: relative, gradients: relative L2 error of all of them together).
    # Logits of the tiny model are below ~0.6 in size: bf16 (8 mantissa bits) is 0.002-0.004 off there, fp16
    # (11 bits) ~0.0005; the loss is reduced in fp32 inside the model. Measured: bf16 0.0035 / 2e-7 / 0.005,
    # fp16 0.0005 / 1.5e-6 / 0.0007; the bounds leave 4-6x of that.
    torch.bfloat16: (0.02, 2e-3, 0.03),
    torch.float16: (0.003, 5e-4, 0.005),
}


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_and_backward_match_fp32(dtype, chunked):
    """The same weights in half precision give fp32's logits, loss and gradients within the stated tolerance, on
    the chunked training head (no logits returned) and on the full-logits path."""
    logits_atol, loss_rtol, grad_rtol = HALF_TOLERANCES[dtype]
    reference, model = tiny_model().train(), tiny_model().to(dtype).train()
    ids = tokens(2, 8)
    return_logits = None if chunked else True
    expected = reference(input_ids=ids, labels=ids, return_logits=return_logits)
    out = model(input_ids=ids, labels=ids, return_logits=return_logits)
    assert torch.isfinite(out.loss)
    if chunked:
        assert out.logits is None
    else:
        assert out.logits.dtype == dtype
        torch.testing.assert_close(out.logits.float(), expected.logits, atol=logits_atol, rtol=0)
    torch.testing.assert_close(out.loss.float(), expected.loss, atol=0, rtol=loss_rtol)
    out.loss.backward()
    expected.loss.backward()
    assert all(p.grad.dtype == dtype and torch.isfinite(p.grad).all() for p in model.parameters())
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters()])
    reference_grads = torch.cat([p.grad.flatten() for p in reference.parameters()])
    error = ((grads - reference_grads).norm() / reference_grads.norm()).item()
    assert error < grad_rtol, f"{dtype} gradients are {error:.2%} off fp32's"


def test_decoder_layer_compiles_without_graph_breaks():
    model = tiny_model()
    layer = model.model.layers[0]
    hidden = torch.randn(2, 8, 64)
    positions = torch.arange(8).unsqueeze(0)
    rope = model.model.rotary_emb(hidden, positions)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(hidden, position_embeddings=rope, position_ids=positions),
            layer(hidden, position_embeddings=rope, position_ids=positions),
        )


def test_probe_exposes_post_rope_queries_and_keys_on_sdpa():
    model = tiny_model()
    captured = {}

    def hook(module, args, output):
        captured["q"], captured["k"] = output

    probes = [m for m in model.modules() if isinstance(m, WontonAttentionProbe)]
    assert len(probes) == 2
    probes[0].register_forward_hook(hook)
    ids = tokens(1, 6)
    with torch.no_grad():
        model(input_ids=ids)
    assert captured["q"].shape == (1, 4, 6, 16) and captured["k"].shape == (1, 4, 6, 16)
    # the same q.k the eager path turns into attention weights
    model.set_attn_implementation("eager")
    with torch.no_grad():
        weights = model(input_ids=ids, output_attentions=True).attentions[0]
    logits = captured["q"] @ captured["k"].transpose(-1, -2) / 4.0
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    expected = logits.masked_fill(~causal, float("-inf")).softmax(-1)
    torch.testing.assert_close(weights, expected, atol=1e-5, rtol=1e-5)


def test_learned_positions_beyond_the_table_fail_clearly():
    model = tiny_model(position_embedding_type="learned", max_position_embeddings=16)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=tokens(1, 20))


def test_decoder_layers_are_the_unit_of_sharding():
    assert tiny_model()._no_split_modules == {"WontonDecoderLayer"}
    assert isinstance(tiny_model().model.layers[0], WontonDecoderLayer)


def test_token_loss_is_the_per_token_cross_entropy_of_the_fused_pass():
    model = tiny_model().train()
    ids = tokens(2, 9)
    labels = ids.clone()
    labels[1, :3] = -100
    out = model(input_ids=ids, labels=labels, return_token_loss=True, return_logits=True)
    assert out.token_loss.shape == labels.shape and not out.token_loss.requires_grad
    expected = F.cross_entropy(
        out.logits[:, :-1].float().reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none"
    ).view(2, 8)
    torch.testing.assert_close(out.token_loss[:, :-1], expected.detach())
    assert torch.all(out.token_loss[:, -1] == 0)
    torch.testing.assert_close(out.token_loss.sum() / (labels[:, 1:] != -100).sum(), out.ce_loss.detach())
    out.loss.backward()  # the extra output leaves the fused backward intact
    assert model.lm_head.weight.grad is not None
    assert model(input_ids=ids, labels=labels).token_loss is None  # only on request
