"""`train.compile`: decoder layers compiled in place give the eager step's loss and gradients, compile once, and
train through the real Trainer path (`build_trainer`). Backend aot_eager (traces forward and backward as inductor
does, runs the traced graphs eagerly) keeps CI short on 2 cores; the inductor comparison is marked slow."""

import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from wonton_hf.models.wonton import WontonConfig, WontonForCausalLM
from wonton_hf.training import build_trainer, load_run_config, run
from wonton_hf.training.compilation import compile_decoder_layers, decoder_layers

from .test_pretrain import DEMO, small

DOCUMENTS = (37, 50, 41)  # three packed documents per row: the mask must keep them apart


def tiny_model(attn: str, **overrides) -> WontonForCausalLM:
    torch.manual_seed(0)
    fields = dict(num_hidden_layers=3, z_loss_coef=1e-3, max_z_loss_coef=1e-3, loss_chunk_size=48, use_cache=False)
    config = WontonConfig.from_preset("wonton-tiny", attn_implementation=attn, **{**fields, **overrides})
    return WontonForCausalLM(config).train()


def packed_batch(rows: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    length = sum(DOCUMENTS)
    ids = torch.randint(0, 8192, (rows, length), generator=generator)
    positions = torch.cat([torch.arange(n) for n in DOCUMENTS]).repeat(rows, 1)
    labels = ids.clone()
    labels[:, -5:] = -100  # a padded tail: the eager loss skips these rows, the traced one scores them at weight 0
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def step(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = model(**batch)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out.loss.detach(), grads


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


@pytest.mark.parametrize("attn, checkpointing", [("eager", False), ("sdpa", False), ("sdpa", True)])
def test_compiled_layers_give_the_eager_loss_and_gradients_and_compile_once(attn, checkpointing, fresh_dynamo):
    eager = tiny_model(attn)
    if checkpointing:  # `train.gradient_checkpointing`: the compiled layer runs inside the recomputation
        eager.gradient_checkpointing_enable()
    compiled = copy.deepcopy(eager)
    assert compile_decoder_layers(compiled, backend="aot_eager", fullgraph=True) == 3
    for seed in (1, 2, 3, 4):  # new data every step, same shape: no recompilation after the first
        batch = packed_batch(seed=seed)
        loss_e, grads_e = step(eager, batch)
        loss_c, grads_c = step(compiled, batch)
        # Same kernels in the same order (aot_eager runs the traced ops eagerly): only summation order may differ.
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-6, atol=1e-6)
        assert grads_c.keys() == grads_e.keys()
        for name in grads_e:
            torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-5, atol=1e-6, msg=name)
    # One graph for the three layers (they differ only in weights, which are inputs), no break.
    assert fresh_dynamo["stats"]["unique_graphs"] == 1
    assert not fresh_dynamo["graph_break"] and not fresh_dynamo["recompiles"]
    # In place: parameter names and the state dict are the eager model's (checkpoints stay interchangeable).
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_compiled_layers_keep_packed_documents_apart(fresh_dynamo):
    """Changing document 1's tokens moves only document 1's logits (the mask built eagerly reaches the layers)."""
    model = tiny_model("sdpa").eval()
    compile_decoder_layers(model, backend="aot_eager")
    batch = packed_batch(rows=1)
    other = batch["input_ids"].clone()
    other[:, : DOCUMENTS[0]] = torch.randint(0, 8192, (1, DOCUMENTS[0]), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        moved = model(input_ids=other, position_ids=batch["position_ids"]).logits
    first = DOCUMENTS[0]
    assert (moved[:, :first] - logits[:, :first]).abs().max() > 1e-2  # the perturbation is visible where it should be
    torch.testing.assert_close(moved[:, first:], logits[:, first:], rtol=0, atol=1e-5)


def test_flex_attention_compiled_forward_matches_eager(fresh_dynamo):
    """flex_attention has no backward on CPU (torch 2.13): the forward with the document mask is compared here,
    the training step on a GPU (`benchmarks/gpu_check.py`)."""
    eager = tiny_model("flex_attention").eval()
    compiled = copy.deepcopy(eager)
    compile_decoder_layers(compiled, backend="aot_eager")
    batch = packed_batch()
    with torch.no_grad():
        expected = eager(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        got = compiled(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        sdpa = tiny_model("sdpa").eval()(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(expected, sdpa, rtol=1e-4, atol=1e-4)  # the same document mask as sdpa's


def test_a_model_without_repeated_blocks_is_refused():
    with pytest.raises(ValueError, match="_no_split_modules"):
        decoder_layers(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_inductor_compiled_step_matches_eager(fresh_dynamo):
    """Generated kernels (fused, reordered): fp32 agreement to a relative 1e-4."""
    eager = tiny_model("sdpa")
    compiled = copy.deepcopy(eager)
    compile_decoder_layers(compiled)
    for seed in (1, 2):
        loss_e, grads_e = step(eager, packed_batch(seed=seed))
        loss_c, grads_c = step(compiled, packed_batch(seed=seed))
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
        for name in grads_e:
            torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-5, msg=name)
    assert fresh_dynamo["stats"]["unique_graphs"] == 1 and not fresh_dynamo["recompiles"]


def test_run_config_compile_trains_through_the_trainer_like_eager(tmp_path, fresh_dynamo):
    """`train.compile` through `build_trainer` + `run`: the layers are compiled and the losses are the eager run's.

    Both runs use one tokenizer (one trained at start-up can differ between two trainings of it). Graphs: one
    for batches with a document boundary (a mask) and one for batches without (sdpa's causal path), no more.
    """
    steps = ["train.max_steps=4", "train.save_steps=4", "evaluation=null"]
    eager = load_run_config(DEMO, small(tmp_path / "eager", *steps))
    tokenizer = f"tokenizer.path={eager.run_dir / 'tokenizer'}"
    compiled = load_run_config(DEMO, small(tmp_path / "compiled", *steps, tokenizer, "train.compile.backend=aot_eager"))
    losses = {}
    for name, config in {"eager": eager, "compiled": compiled}.items():
        prepared = build_trainer(config)
        layers = decoder_layers(prepared.trainer.model)
        assert len(layers) == 4
        assert all((layer._compiled_call_impl is not None) == (name == "compiled") for layer in layers)
        run(prepared)
        losses[name] = [e["loss"] for e in prepared.trainer.state.log_history if "loss" in e]
    assert len(losses["eager"]) == len(losses["compiled"]) == 4
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-6)
    assert 1 <= fresh_dynamo["stats"]["unique_graphs"] <= 2 and not fresh_dynamo["graph_break"]


def test_flash_attention_runs_get_the_document_boundaries_from_the_collator():
    """transformers' flash path reads packing from `position_ids` only for one-row batches: the collator must hand
    it `cu_seq_lens` (the GPU check verifies that no document sees another under flash varlen)."""
    from wonton_hf.training.pretrain import packed_collator

    assert packed_collator(
        load_run_config(DEMO, ["model.attn_implementation=flash_attention_2"])
    ).return_flash_attn_kwargs
    assert not packed_collator(load_run_config(DEMO, ["model.attn_implementation=sdpa"])).return_flash_attn_kwargs
