import pytest
import torch
from transformers import AutoConfig

import wonton_hf  # noqa: F401  (registers the Auto classes)
from wonton_hf import WONTON_PRESETS, WontonConfig, WontonForCausalLM


def test_round_trip_through_auto_config(tmp_path):
    config = WontonConfig.from_preset("wonton-tiny", qk_layernorm=False, z_loss_coef=1e-4)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, WontonConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.z_loss_coef == 1e-4 and loaded.qk_layernorm is False
    assert loaded.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    assert loaded.head_dim == 32


def test_defaults_follow_the_paper():
    config = WontonConfig()
    assert (config.hidden_act, config.qk_layernorm, config.use_bias, config.tie_word_embeddings) == (
        "gelu",
        True,
        True,
        False,
    )
    assert (config.z_loss_coef, config.max_z_loss_coef) == (0.0, 2e-4)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 2, 3)


def test_7b_preset_is_table_1_and_counts_exactly():
    config = WontonConfig.from_preset("wonton-7b")
    shape = (config.hidden_size, config.num_attention_heads, config.num_hidden_layers, config.intermediate_size)
    assert shape == (4096, 32, 32, 16384)
    assert (config.max_position_embeddings, config.vocab_size) == (2048, 139_776)
    with torch.device("meta"):
        model = WontonForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == 7_589_364_224


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("wonton-tiny", 1e6, 5e6), ("wonton-125m", 100e6, 170e6), ("wonton-1b", 0.9e9, 1.3e9)],
)
def test_preset_sizes(name, low, high):
    with torch.device("meta"):
        model = WontonForCausalLM(WontonConfig.from_preset(name))
    assert low <= sum(p.numel() for p in model.parameters()) <= high


PRESETS = {
    # name: (d / heads / layers / d_ff / ctx / vocab, position embedding, QK-LayerNorm, parameters) as in
    # docs/model.md ("Presets"); the counts are exact (2.9M, 135M, 1.11B, the public 1.5B, Table 1's 7B).
    "wonton-tiny": ((128, 4, 4, 512, 512, 8_192), "rope", True, 2_899_200),
    "wonton-125m": ((768, 12, 12, 3072, 2048, 32_768), "rope", True, 135_423_488),
    "wonton-1b": ((1536, 12, 24, 6144, 2048, 139_776), "rope", True, 1_109_503_488),
    "wonton-1.5b-public": ((1600, 25, 48, 6400, 1024, 50_304), "learned", False, 1_638_223_104),
    "wonton-7b": ((4096, 32, 32, 16384, 2048, 139_776), "rope", True, 7_589_364_224),
}


def expected_parameters(d: int, heads: int, layers: int, d_ff: int, ctx: int, vocab: int, learned: bool, qk_ln: bool):
    """The architecture's count by hand: pre-LN blocks with biases everywhere, untied head with bias."""
    block = (
        2 * 2 * d  # two LayerNorms
        + 4 * (d * d + d)  # q, k, v, o with biases
        + (d * d_ff + d_ff)
        + (d_ff * d + d)  # MLP with biases
        + (2 * 2 * (d // heads) if qk_ln else 0)  # QK-LayerNorm over head_dim
    )
    return vocab * d + layers * block + 2 * d + (vocab * d + vocab) + (ctx * d if learned else 0)


def test_every_preset_is_listed_here():
    assert set(WONTON_PRESETS) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_has_its_documented_shape_and_parameter_count(name):
    shape, positions, qk_ln, count = PRESETS[name]
    config = WontonConfig.from_preset(name)
    got = (
        config.hidden_size,
        config.num_attention_heads,
        config.num_hidden_layers,
        config.intermediate_size,
        config.max_position_embeddings,
        config.vocab_size,
    )
    assert got == shape
    assert (config.position_embedding_type, config.qk_layernorm) == (positions, qk_ln)
    with torch.device("meta"):  # shapes only: no memory for the weights
        model = WontonForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    assert total == count == expected_parameters(*shape, learned=positions == "learned", qk_ln=qk_ln)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hidden_size": 100, "num_attention_heads": 3}, "hidden_size"),
        ({"hidden_act": "swishy"}, "hidden_act"),
        ({"vocab_size": -5}, "vocab_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"intermediate_size": -1}, "intermediate_size"),
        ({"position_embedding_type": "alibi"}, "position_embedding_type"),
        ({"max_z_loss_coef": -1.0}, "max_z_loss_coef"),
        ({"attention_dropout": 1.5}, "attention_dropout"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        WontonConfig(**kwargs)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="wonton-7b"):
        WontonConfig.from_preset("wonton-13b")
