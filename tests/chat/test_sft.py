"""A real SFTTrainer run through `wonton_hf.chat.sft` (packing on): the loss falls, the result loads as a chat model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from wonton_hf.chat.sft import SFTRunConfig, batch_efficiency, build_sft_trainer, load_sft_config, run_sft

from .samples import CONVERSATIONS


def write_config(tmp_path, messages_file, **train):
    config = {
        "run_name": "sft-test",
        "output_dir": str(tmp_path / "out"),
        "model": {
            "path": "auto",
            "tiny_vocab_size": 512,
            "tiny_overrides": {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 256},
        },
        "data": {
            "max_length": 128,
            "packing": True,
            "sources": [{"name": "chat", "format": "messages", "path": str(messages_file), "weight": 6}],
        },
        "train": {
            "max_steps": 10,
            "learning_rate": 3e-3,
            "global_batch_size": 4,
            "per_device_batch_size": 4,
            "warmup_ratio": 0.0,
            "lr_scheduler_type": "constant",
            "logging_steps": 2,
            "save_steps": 1000,
            "report_to": [],
            **train,
        },
        "monitors": {"stability": {"every_n_steps": 5}, "throughput": {}, "spike_guard": None},
    }
    path = tmp_path / "sft.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def test_sft_run_loss_falls_and_saves_a_chat_model(tmp_path, messages_file, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `model.path: auto` finds no outputs/pretrain-demo/final here: tiny model on the spot
    config = load_sft_config(write_config(tmp_path, messages_file))
    prepared = build_sft_trainer(config)
    assert "made on the spot" in prepared.model_origin
    args = prepared.trainer.args
    assert args.bf16 is False and args.use_cpu and args.gradient_accumulation_steps == 1
    assert prepared.trainer.padding_free and args.assistant_only_loss
    efficiency = batch_efficiency(prepared.trainer)
    assert efficiency.padding_efficiency == 1.0 and 0 < efficiency.loss_fraction < 1

    final = run_sft(prepared)
    losses = [h["loss"] for h in prepared.trainer.state.log_history if "loss" in h]
    assert len(losses) >= 5 and losses[-1] < losses[0] - 1.0, losses  # logged every 2 steps (and by the monitor)
    assert any("stability/max_attn_logit/max" in h for h in prepared.trainer.state.log_history)

    import wonton_hf  # noqa: F401

    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert (
        tokenizer.apply_chat_template(CONVERSATIONS[0][:1], tokenize=False, add_generation_prompt=True)
        == "<s> [INST] What is the capital of Italy? [/INST]"
    )
    ids = tokenizer.apply_chat_template(CONVERSATIONS[0], return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    report = json.loads((final / "sft_data_report.json").read_text())
    assert report["kept"] == {"chat": len(CONVERSATIONS)} and report["sampled"] == {"chat": 6 * len(CONVERSATIONS)}


def test_config_errors_name_the_field(tmp_path, messages_file):
    path = write_config(tmp_path, messages_file)
    with pytest.raises(ValueError, match="global_batch_size"):
        load_sft_config(path, ["train.global_batch_size=6"]).gradient_accumulation_steps(1)
    with pytest.raises(ValueError, match=r"train.lr: unknown key; accepted keys: .*learning_rate"):
        load_sft_config(path, ["train.lr=1e-5"])
    with pytest.raises(ValueError, match="format"):
        load_sft_config(path, ["data.sources=[{name: x, format: sharegpt, path: a.jsonl}]"])
    with pytest.raises(ValueError, match="deepspeed"):
        load_sft_config(path, ["train.deepspeed=/nonexistent/zero2.json"]).check_files()
    with pytest.raises(ValueError, match=r"data.sources\[0\].path: format messages has no default"):
        load_sft_config(path, ["data.sources[0].path=null"])
    # Schedulers that need options SFT configs do not carry fail here, not inside transformers.
    with pytest.raises(ValueError, match=r"train.lr_scheduler_type: .*warmup_stable_decay.*needs options"):
        load_sft_config(path, ["train.lr_scheduler_type=warmup_stable_decay"])


def test_paper_defaults():
    train = SFTRunConfig().train
    assert (train.learning_rate, train.global_batch_size, train.betas, train.max_grad_norm) == (
        2e-5,
        512,
        (0.9, 0.95),
        1.0,
    )
    assert 1 <= train.epochs <= 3 and train.assistant_only_loss
    assert SFTRunConfig().gradient_accumulation_steps(8) == 16  # 512 / (4 per device x 8 ranks)


def test_auto_model_path_uses_the_pretrain_demo_output(tmp_path, monkeypatch):
    """`model.path: auto` picks outputs/pretrain-demo/final (a base model: no template, no [INST] tokens yet)."""
    from wonton_hf.chat.sft import PRETRAIN_DEMO_OUTPUT, load_model_and_tokenizer
    from wonton_hf.tokenization import save_tokenizer, train_tokenizer

    from .conftest import tiny_model
    from .samples import tokenizer_texts

    base = tmp_path / PRETRAIN_DEMO_OUTPUT
    tokenizer = train_tokenizer(texts=tokenizer_texts(), vocab_size=384).tokenizer
    tiny_model(tokenizer).save_pretrained(base)
    save_tokenizer(tokenizer, base)
    monkeypatch.chdir(tmp_path)
    config = SFTRunConfig()
    config.data.sources = [{"name": "x", "format": "messages", "path": "x.jsonl"}]
    model, chat_tokenizer, origin = load_model_and_tokenizer(config)
    assert origin == PRETRAIN_DEMO_OUTPUT
    assert chat_tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False).startswith("<s> [INST] ")
    assert len(chat_tokenizer) == 386 and model.get_input_embeddings().num_embeddings == 512
