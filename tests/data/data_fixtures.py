"""Helpers and fixtures for the data scheduler tests: a tiny BPE tokenizer and small multilingual corpora, made here.

(A uniquely named module rather than `conftest` imports, since other test folders have their own conftest.)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]  # ids 0..3 as in WontonConfig

SAMPLES = {
    "en": "The quick brown fox jumps over the lazy dog near the river bank",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund am Flussufer",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux près de la rivière",
    "zh": "敏捷的棕色狐狸跳过了河边那只懒惰的狗",
    "ja": "素早い茶色の狐が川辺の怠け者の犬を飛び越える",
}


def doc_text(lang: str, i: int) -> str:
    """A unique, recognisable document: `<lang>#<i>#` then a length that varies with i."""
    words = SAMPLES[lang].split() if lang not in ("zh", "ja") else list(SAMPLES[lang])
    body = " ".join(words[j % len(words)] for j in range(3 + (i * 7) % 60))
    return f"{lang}#{i}# {body}"


def write_jsonl(path: Path, lang: str, ids: range, compress: str | None = None) -> Path:
    lines = "".join(json.dumps({"text": doc_text(lang, i), "lang": lang}) + "\n" for i in ids).encode()
    if compress == "gz":
        path.write_bytes(gzip.compress(lines))
    elif compress == "zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(lines))
    else:
        path.write_bytes(lines)
    return path


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([doc_text(lang, i) for lang in SAMPLES for i in range(50)], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, list[Path]]:
    """en: 2 gz files, de: 1 jsonl, fr: 1 zst, zh: 3 plain files; 600 documents in all."""
    root = tmp_path / "corpus"
    root.mkdir()
    return {
        "en": [write_jsonl(root / f"en_{k}.jsonl.gz", "en", range(k * 100, k * 100 + 100), "gz") for k in range(2)],
        "de": [write_jsonl(root / "de.jsonl", "de", range(150))],
        "fr": [write_jsonl(root / "fr.jsonl.zst", "fr", range(100), "zst")],
        "zh": [write_jsonl(root / f"zh_{k}.jsonl", "zh", range(k * 50, k * 50 + 50)) for k in range(3)],
    }
