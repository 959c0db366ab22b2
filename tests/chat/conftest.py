"""Fixtures of the chat tests: a tokenizer trained here, tiny Wonton models, sample files in every format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wonton_hf.chat.template import install_chat_template
from wonton_hf.models.wonton import WontonConfig, WontonForCausalLM
from wonton_hf.tokenization import train_tokenizer

from .samples import CONVERSATIONS, tokenizer_texts


@pytest.fixture(scope="session")
def chat_tokenizer():
    """A 512-piece BPE trained on multilingual samples, with the [INST] template installed."""
    tokenizer = train_tokenizer(texts=tokenizer_texts(), vocab_size=512).tokenizer
    install_chat_template(tokenizer)
    return tokenizer


def tiny_model(tokenizer, seed: int = 0) -> WontonForCausalLM:
    torch.manual_seed(seed)
    config = WontonConfig.from_preset(
        "wonton-tiny",
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        intermediate_size=256,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return WontonForCausalLM(config)


@pytest.fixture(scope="session")
def saved_chat_model(tmp_path_factory, chat_tokenizer) -> Path:
    """An untrained tiny model + tokenizer with the template, as `save_pretrained` writes them."""
    path = tmp_path_factory.mktemp("chat-model")
    tiny_model(chat_tokenizer).save_pretrained(path)
    chat_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def messages_file(tmp_path) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in CONVERSATIONS), "utf-8")
    return path
