"""Regression tests for the KV cache and the attention mask on the transformers a fresh install resolves.

Each test pins one defect found on transformers 5.24 (issue 11): `generate()` passing the cache as
`cache=` (ignored before, so every decoding step attended only to itself), a static cache whose length is a
tensor (Python branching on it broke `torch.compile(fullgraph=True)`), and padding masks with gaps (each
padded slot used to start a new "document"). Uncached generation recomputes everything from the full
sequence, so it is the reference for the cached path.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import StaticCache

from .test_modeling_wonton import VOCAB, tiny_model, tokens

POSITION_TYPES = ["rope", "learned"]


def _left_padded(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(p.numel() for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - prompt.numel() :] = prompt
        mask[row, width - prompt.numel() :] = 1
    return ids, mask


def _generate(model, ids, mask, use_cache: bool, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # nothing of ours may be deprecated in generate()
        return model.generate(
            ids,
            attention_mask=mask,
            use_cache=use_cache,
            pad_token_id=0,
            eos_token_id=None,
            return_dict_in_generate=True,
            output_logits=True,
            **kwargs,
        )


@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_cached_greedy_equals_uncached_on_200_prompts(position_embedding_type):
    """Token for token, logits within 1e-5 (fp32), on 200 left-padded prompts of 1-16 tokens."""
    model = tiny_model(position_embedding_type=position_embedding_type)
    generator = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 17, (200,), generator=generator).tolist()
    prompts = [torch.randint(4, VOCAB, (n,), generator=generator) for n in lengths]
    for start in range(0, 200, 50):
        ids, mask = _left_padded(prompts[start : start + 50])
        cached = _generate(model, ids, mask, True, max_new_tokens=8, do_sample=False)
        uncached = _generate(model, ids, mask, False, max_new_tokens=8, do_sample=False)
        assert torch.equal(cached.sequences, uncached.sequences)
        torch.testing.assert_close(torch.stack(cached.logits), torch.stack(uncached.logits), atol=1e-5, rtol=0)


@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_cached_sampling_equals_uncached(position_embedding_type):
    model = tiny_model(position_embedding_type=position_embedding_type)
    ids, mask = _left_padded([tokens(5, seed=11)[0], tokens(9, seed=12)[0], tokens(2, seed=13)[0]])
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        outputs.append(_generate(model, ids, mask, use_cache, max_new_tokens=10, do_sample=True, top_k=0, top_p=1.0))
    assert torch.equal(outputs[0].sequences, outputs[1].sequences)
    torch.testing.assert_close(torch.stack(outputs[0].logits), torch.stack(outputs[1].logits), atol=1e-5, rtol=0)


@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_packed_prompt_generation_continues_its_last_document(position_embedding_type, with_mask):
    """A row packing two documents: cached decoding must see only the last one, as uncached decoding does."""
    model = tiny_model(position_embedding_type=position_embedding_type)
    first, last = tokens(1, 6, seed=21), tokens(1, 5, seed=22)
    packed = torch.cat([first, last], dim=1)
    positions = torch.cat([torch.arange(6), torch.arange(5)]).unsqueeze(0)
    mask = torch.ones_like(packed) if with_mask else None
    kwargs = dict(max_new_tokens=8, do_sample=False, position_ids=positions)
    cached = _generate(model, packed, mask, True, **kwargs)
    uncached = _generate(model, packed, mask, False, **kwargs)
    alone = _generate(model, last, None, True, max_new_tokens=8, do_sample=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.equal(cached.sequences[:, 11:], alone.sequences[:, 5:])
    torch.testing.assert_close(torch.stack(cached.logits), torch.stack(alone.logits), atol=1e-5, rtol=0)


@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_static_cache_generation_equals_dynamic(position_embedding_type):
    model = tiny_model(position_embedding_type=position_embedding_type)
    ids, mask = _left_padded([tokens(7, seed=31)[0], tokens(3, seed=32)[0]])
    dynamic = _generate(model, ids, mask, True, max_new_tokens=6, do_sample=False)
    static = _generate(model, ids, mask, True, max_new_tokens=6, do_sample=False, cache_implementation="static")
    assert torch.equal(dynamic.sequences, static.sequences)
    torch.testing.assert_close(torch.stack(dynamic.logits), torch.stack(static.logits), atol=1e-5, rtol=0)


def test_static_cache_decoding_compiles_with_fullgraph():
    """Prefill and one decoding step through `torch.compile(fullgraph=True)`: a graph break raises."""
    torch._dynamo.reset()
    model = tiny_model()
    ids = tokens(2, 6)
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    next_ids = tokens(2, 1, seed=5)
    next_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
    next_positions = positions[:, -1:] + 1

    def run(forward):
        cache = StaticCache(config=model.config, max_cache_len=16)
        with torch.no_grad():
            prefill = forward(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
            step = forward(
                input_ids=next_ids, attention_mask=next_mask, position_ids=next_positions, cache=cache, use_cache=True
            )
        return prefill.logits, step.logits

    compiled = torch.compile(model.forward, fullgraph=True, backend="eager")
    for got, expected in zip(run(compiled), run(model.forward), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "sdpa", "flex_attention"])
@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_padding_mask_with_gaps_matches_the_unpadded_rows(impl, position_embedding_type):
    """transformers' `test_*_padding_matches_padding_free_with_position_ids` in fp32: pads inside a row are
    not document boundaries. Positions count real tokens only, as in that test."""
    model = tiny_model(position_embedding_type=position_embedding_type)
    model.set_attn_implementation(impl)
    mask = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 1], [0, 0, 1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
    ids = tokens(3, 8, seed=41).masked_fill(mask == 0, 0)
    positions = ((mask.cumsum(-1) - 1) * mask).clamp(min=0)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        for row in range(3):
            alone = model(input_ids=ids[row][mask[row].bool()].unsqueeze(0)).logits[0]
            torch.testing.assert_close(padded[row][mask[row].bool()], alone, atol=1e-5, rtol=1e-5)


def test_old_cache_keyword_still_works_with_transformers_notice():
    """Callers that pass `past_key_values=` themselves get the same result and transformers' deprecation notice."""
    model = tiny_model()
    ids = tokens(1, 10)
    with torch.no_grad():
        first = model(input_ids=ids[:, :6], use_cache=True)
        new = model(input_ids=ids[:, 6:], cache=first.cache).logits
        first = model(input_ids=ids[:, :6], use_cache=True)
        with pytest.warns(FutureWarning, match="past_key_values"):
            old = model(input_ids=ids[:, 6:], past_key_values=first.cache).logits
    torch.testing.assert_close(new, old)
