"""Fixtures of the judged chat evaluation: tiny base and chat models, the test judge server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wonton_hf.chat.template import install_chat_template
from wonton_hf.models.wonton import WontonForCausalLM
from wonton_hf.tokenization import train_tokenizer
from wonton_hf.training.model_init import fresh_wonton_model

from ..chat.samples import tokenizer_texts
from .server import JudgeServer


def _tiny(tokenizer, seed: int) -> WontonForCausalLM:
    torch.manual_seed(seed)
    shape = dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=64)
    return fresh_wonton_model("wonton-tiny", tokenizer, max_length=1024, attn_implementation="sdpa", overrides=shape)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny base model (tokenizer without a chat template) and a "chat" model made from it the way SFT starts:
    the Wonton [INST] template installed, embeddings grown. Untrained: their answers are noise, which is all the
    plumbing needs (ratings come from the test judge's rules)."""
    root = tmp_path_factory.mktemp("judge-models")
    tokenizer = train_tokenizer(texts=tokenizer_texts(), vocab_size=512).tokenizer
    base = _tiny(tokenizer, seed=0)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    install_chat_template(tokenizer, base)
    base.save_pretrained(root / "chat")
    tokenizer.save_pretrained(root / "chat")
    return {"base": root / "base", "chat": root / "chat"}


@pytest.fixture
def judge_server():
    server = JudgeServer().start()
    yield server
    server.stop()
