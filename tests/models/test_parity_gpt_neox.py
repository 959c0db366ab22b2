"""Parity with a peer implementation: transformers' GPT-NeoX with the same block."""

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from wonton_hf import WontonConfig, WontonForCausalLM


def neox_twin(model: WontonForCausalLM) -> GPTNeoXForCausalLM:
    """GPT-NeoX with Wonton's block (sequential residual, full rotary) carrying the same weights."""
    c = model.config
    neox = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            intermediate_size=c.intermediate_size,
            hidden_act="gelu",
            max_position_embeddings=c.max_position_embeddings,
            layer_norm_eps=c.layer_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
            use_parallel_residual=False,
            tie_word_embeddings=False,
            attention_bias=True,
        )
    ).eval()
    heads, head_dim, d = c.num_attention_heads, c.head_dim, c.hidden_size
    ours = model.state_dict()
    theirs = {
        "gpt_neox.embed_in.weight": ours["model.embed_tokens.weight"],
        "gpt_neox.final_layer_norm.weight": ours["model.norm.weight"],
        "gpt_neox.final_layer_norm.bias": ours["model.norm.bias"],
        "lm_head.weight": ours["lm_head.weight"],
    }
    for i in range(c.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"gpt_neox.layers.{i}."
        # ours: [q(all heads); k; v]; GPT-NeoX: per head [q_h; k_h; v_h]
        qkv_w = ours[src + "self_attn.qkv_proj.weight"].view(3, heads, head_dim, d).transpose(0, 1).reshape(3 * d, d)
        qkv_b = ours[src + "self_attn.qkv_proj.bias"].view(3, heads, head_dim).transpose(0, 1).reshape(3 * d)
        theirs |= {
            dst + "attention.query_key_value.weight": qkv_w,
            dst + "attention.query_key_value.bias": qkv_b,
            dst + "attention.dense.weight": ours[src + "self_attn.o_proj.weight"],
            dst + "attention.dense.bias": ours[src + "self_attn.o_proj.bias"],
            dst + "mlp.dense_h_to_4h.weight": ours[src + "mlp.up_proj.weight"],
            dst + "mlp.dense_h_to_4h.bias": ours[src + "mlp.up_proj.bias"],
            dst + "mlp.dense_4h_to_h.weight": ours[src + "mlp.down_proj.weight"],
            dst + "mlp.dense_4h_to_h.bias": ours[src + "mlp.down_proj.bias"],
        }
        for norm_ours, norm_theirs in (
            ("input_layernorm", "input_layernorm"),
            ("post_attention_layernorm", "post_attention_layernorm"),
        ):
            for p in ("weight", "bias"):
                theirs[f"{dst}{norm_theirs}.{p}"] = ours[f"{src}{norm_ours}.{p}"]
    neox.load_state_dict(theirs, strict=True)
    return neox


def test_logits_equal_gpt_neox_with_qk_layernorm_off():
    torch.manual_seed(0)
    config = WontonConfig(
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=256,
        qk_layernorm=False,
    )
    model = WontonForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != "lm_head.bias":  # GPT-NeoX's head has no bias: keep ours at its zero init
                param.copy_(
                    torch.randn_like(param) * 0.05
                    + (1.0 if "norm.weight" in name or "layernorm.weight" in name else 0.0)
                )
    neox = neox_twin(model)
    ids = torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(0))
    for impl in ("eager", "sdpa"):
        model.set_attn_implementation(impl)
        neox.set_attn_implementation(impl)
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, neox(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
