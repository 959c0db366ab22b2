"""Converter parity: an original-layout state dict through a plain-torch reference of the original block
and through the converted model gives the same logits."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

import wonton_hf  # noqa: F401
from wonton_hf import WontonConfig
from wonton_hf.cli import main as cli_main

D, HEADS, LAYERS, FF, VOCAB, CTX = 64, 4, 2, 256, 300, 64


def original_state_dict(learned: bool, qk_norm: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05, offset=0.0):
        return torch.randn(*shape, generator=g) * scale + offset

    hd = D // HEADS
    sd = {
        "linear.weight": r(VOCAB, D),
        "linear.bias": r(VOCAB),
        "transformer_encoder.norm.weight": r(D, offset=1.0),
        "transformer_encoder.norm.bias": r(D),
    }
    if learned:
        sd["embedding.token_value_embedding.weight"] = r(VOCAB, D)
        sd["embedding.token_position_embedding.weight"] = r(CTX, D)
    else:
        sd["embedding.weight"] = r(VOCAB, D)
    for i in range(LAYERS):
        p = f"transformer_encoder.layers.{i}."
        sd |= {
            p + "self_attn.in_proj_weight": r(3 * D, D),
            p + "self_attn.in_proj_bias": r(3 * D),
            p + "self_attn.out_proj_weight": r(D, D),
            p + "self_attn.out_proj_bias": r(D),
            p + "linear1.weight": r(FF, D),
            p + "linear1.bias": r(FF),
            p + "linear2.weight": r(D, FF),
            p + "linear2.bias": r(D),
            p + "norm1.weight": r(D, offset=1.0),
            p + "norm1.bias": r(D),
            p + "norm2.weight": r(D, offset=1.0),
            p + "norm2.bias": r(D),
        }
        if qk_norm:
            sd |= {
                p + "self_attn.q_layer_norm.weight": r(hd, offset=1.0),
                p + "self_attn.q_layer_norm.bias": r(hd),
                p + "self_attn.k_layer_norm.weight": r(hd, offset=1.0),
                p + "self_attn.k_layer_norm.bias": r(hd),
            }
    return sd


def reference_forward(sd: dict[str, torch.Tensor], ids: torch.Tensor, learned: bool, qk_norm: bool) -> torch.Tensor:
    """The original GPTModel written out by hand from PAPER_NOTES.md, sharing no code with wonton_hf."""
    B, T = ids.shape
    hd = D // HEADS
    if learned:
        x = sd["embedding.token_value_embedding.weight"][ids] + sd["embedding.token_position_embedding.weight"][:T]
    else:
        x = sd["embedding.weight"][ids]
    inv_freq = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)
    angles = torch.outer(torch.arange(T).float(), inv_freq)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rope(t):  # rotate-half layout
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(LAYERS):
        p = f"transformer_encoder.layers.{i}."
        h = F.layer_norm(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-5)
        qkv = h @ sd[p + "self_attn.in_proj_weight"].T + sd[p + "self_attn.in_proj_bias"]
        q, k, v = (t.view(B, T, HEADS, hd).transpose(1, 2) for t in qkv.split(D, -1))
        if qk_norm:
            q = F.layer_norm(
                q, (hd,), sd[p + "self_attn.q_layer_norm.weight"], sd[p + "self_attn.q_layer_norm.bias"], 1e-5
            )
            k = F.layer_norm(
                k, (hd,), sd[p + "self_attn.k_layer_norm.weight"], sd[p + "self_attn.k_layer_norm.bias"], 1e-5
            )
        if not learned:
            q, k = rope(q), rope(k)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~causal, float("-inf"))
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + attn @ sd[p + "self_attn.out_proj_weight"].T + sd[p + "self_attn.out_proj_bias"]
        h = F.layer_norm(x, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-5)
        h = F.gelu(h @ sd[p + "linear1.weight"].T + sd[p + "linear1.bias"])
        x = x + h @ sd[p + "linear2.weight"].T + sd[p + "linear2.bias"]
    x = F.layer_norm(x, (D,), sd["transformer_encoder.norm.weight"], sd["transformer_encoder.norm.bias"], 1e-5)
    return x @ sd["linear.weight"].T + sd["linear.bias"]


def small_config(learned: bool, qk_norm: bool) -> WontonConfig:
    return WontonConfig(
        vocab_size=VOCAB,
        hidden_size=D,
        intermediate_size=FF,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=CTX,
        qk_layernorm=qk_norm,
        position_embedding_type="learned" if learned else "rope",
    )


@pytest.mark.parametrize(
    ("learned", "qk_norm", "wrapper"), [(False, True, "module"), (True, False, "state_dict"), (False, False, None)]
)
def test_converted_model_matches_the_original_block(tmp_path, learned, qk_norm, wrapper):
    sd = original_state_dict(learned, qk_norm)
    torch.save({wrapper: sd} if wrapper else sd, tmp_path / "orig.pt")
    small_config(learned, qk_norm).save_pretrained(tmp_path / "cfg")
    assert (
        cli_main(
            [
                "convert-checkpoint",
                str(tmp_path / "orig.pt"),
                "--config",
                str(tmp_path / "cfg" / "config.json"),
                "--output",
                str(tmp_path / "hf"),
            ]
        )
        == 0
    )
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids).logits, reference_forward(sd, ids, learned, qk_norm), atol=1e-5, rtol=1e-5
        )


def test_dtype_of_the_checkpoint_is_kept(tmp_path):
    sd = {k: v.to(torch.bfloat16) for k, v in original_state_dict(False, True).items()}
    torch.save({"module": sd}, tmp_path / "orig.pt")
    from wonton_hf.convert import convert_checkpoint

    model = convert_checkpoint(tmp_path / "orig.pt", small_config(False, True), tmp_path / "hf")
    assert model.dtype == torch.bfloat16
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "hf").dtype == torch.bfloat16


def test_wrong_or_missing_keys_are_listed(tmp_path, capsys):
    sd = original_state_dict(False, True)
    del sd["transformer_encoder.layers.1.linear2.bias"]
    sd["transformer_encoder.layers.0.adapter.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "orig.pt")
    small_config(False, True).save_pretrained(tmp_path / "cfg")
    code = cli_main(
        [
            "convert-checkpoint",
            str(tmp_path / "orig.pt"),
            "--config",
            str(tmp_path / "cfg"),
            "--output",
            str(tmp_path / "hf"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "model.layers.1.mlp.down_proj.bias" in err and "transformer_encoder.layers.0.adapter.weight" in err
    assert not (tmp_path / "hf").exists()


def test_a_checkpoint_for_another_variant_is_refused(tmp_path):
    torch.save(original_state_dict(learned=True, qk_norm=True), tmp_path / "orig.pt")
    from wonton_hf.convert import convert_checkpoint

    with pytest.raises(ValueError, match="embed_positions"):
        convert_checkpoint(tmp_path / "orig.pt", small_config(learned=False, qk_norm=True), tmp_path / "hf")


def test_shape_mismatch_names_both_shapes(tmp_path):
    torch.save(original_state_dict(False, True), tmp_path / "orig.pt")
    from wonton_hf.convert import convert_checkpoint

    config = small_config(False, True)
    config.intermediate_size = 128
    with pytest.raises(
        ValueError, match=r"model.layers.0.mlp.up_proj.weight: checkpoint \(256, 64\) vs config \(128, 64\)"
    ):
        convert_checkpoint(tmp_path / "orig.pt", config, tmp_path / "hf")


def test_unreadable_inputs_fail_clearly(tmp_path):
    from wonton_hf.convert import convert_checkpoint

    with pytest.raises(FileNotFoundError):
        convert_checkpoint(tmp_path / "missing.pt", "wonton-tiny", tmp_path / "hf")
    torch.save({"step": 3}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="no state dict"):
        convert_checkpoint(tmp_path / "odd.pt", "wonton-tiny", tmp_path / "hf")
    with pytest.raises(ValueError, match="Unknown Wonton preset"):
        convert_checkpoint(tmp_path / "odd.pt", "wonton-99b", tmp_path / "hf")
