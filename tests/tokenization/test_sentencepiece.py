"""SentencePiece -> PreTrainedTokenizerFast: same ids as `SentencePieceProcessor.encode`, same decode."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from wonton_hf.tokenization.sentencepiece import convert_sentencepiece

from .fixtures import (
    LANGUAGES,
    ORIGINAL_SPM,
    SHARED_CORPUS,
    needs_original_spm,
    sample_texts,
    shared_documents,
    train_small_spm,
)

USER_DEFINED = ["\n", "\t", "\r"] + ["▁" * n for n in range(2, 24)] + list("0123456789")


def adversarial_strings(seed: int = 0, random_count: int = 400) -> list[str]:
    """Space runs 1..60 (alone, before and between words), tabs, CRLF, digits, emoji, rare CJK, controls..."""
    fixed = (
        [" " * n for n in range(1, 61)]
        + [" " * n + "x" for n in range(1, 61)]
        + ["a" + " " * n + "b" for n in range(1, 61)]
    )
    fixed += [
        "\t\tdef f():\r\n\t\treturn 1\r\n",
        "\r\n\r\n",
        "\r\r\n\n\t",
        "12345678901234567890",
        "3.14159 1,000,000 ٣٤٥ １２３",
        "😀👨‍👩‍👧‍👦🏳️‍🌈 emoji",
        "𠀀𠀁𪚥𰻞 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "\x00\x01\x1f\x7f\u200b\u200d\ufeff",
        "nospacesatallinthistextjustletters",
        "混合Mixed 日本語テキスト한국어 Deutsch ß",
        "▁▁literal▁marks",
        "",
        " ",
        "aaaaaaaaaaaaaaaaaaaa",
        "-" * 40,
        "ーーーー",
        "." * 33,
        "ab" * 50,
        "\u3000全角\u3000スペース",
        "a\u0301e\u0301 combining",
        "\ud7a3\uffff\U0010fffd",
        "\xa0nbsp\xa0 ▸",
        "<s>[INST] literal special tokens [/INST]</s>",
        "a<pad>b<unk>c",
    ]
    rng = random.Random(seed)
    alphabet = [
        chr(c) for c in [*range(32, 127), *range(0x4E00, 0x4E40), *range(0x3040, 0x30FF), *range(0xAC00, 0xAC20)]
    ]
    alphabet += [" "] * 20 + ["\n", "\t", "\r", "😀", "\x00", "é", "ß", "▁"]
    strings = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(random_count)]
    any_char = [rng.randint(0, 0xD7FF) for _ in range(2000)] + [rng.randint(0xE000, 0x10FFFF) for _ in range(2000)]
    strings += ["".join(chr(rng.choice(any_char)) for _ in range(rng.randint(0, 30))) for _ in range(random_count // 2)]
    return fixed + strings


def mismatches(
    sp: spm.SentencePieceProcessor, tokenizer, texts: list[str], split_special_tokens: bool = True
) -> list[str]:
    """Texts whose ids or decode differ (batched encode, the way training data is tokenized).

    `split_special_tokens=True` is SentencePiece's behaviour for literal "<s>" in text (see the module doc)."""
    expected = sp.encode(texts)
    got = tokenizer(texts, add_special_tokens=False, split_special_tokens=split_special_tokens)["input_ids"]
    bad = [t for t, a, b in zip(texts, expected, got, strict=True) if a != b]
    bad += [t for t, a in zip(texts, expected, strict=True) if tokenizer.decode(a) != sp.decode(a)]
    return bad


@pytest.fixture(scope="module")
def small_spm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SentencePiece BPE trained here with the original's options."""
    path = tmp_path_factory.mktemp("spm") / "tokenizer.model"
    lines = [line for text in sample_texts() for line in text.split("\n")] + ["    indented code", "x" + " " * 30 + "y"]
    return train_small_spm(path, lines, vocab_size=700, user_defined_symbols=USER_DEFINED)


def test_small_model_parity_and_autotokenizer_load(small_spm: Path, tmp_path: Path) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(small_spm))
    convert_sentencepiece(small_spm.parent, tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert len(tokenizer) == sp.vocab_size()
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id] == [
        0,
        1,
        2,
        3,
    ]
    texts = sample_texts() + adversarial_strings()
    assert mismatches(sp, tokenizer, texts) == []


def test_special_token_text_only_with_split_special_tokens(small_spm: Path, tmp_path: Path) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(small_spm))
    text = "<s>[INST] hi [/INST]</s><pad><unk>"
    tokenizer = convert_sentencepiece(small_spm)
    # Default, like HF Llama-style tokenizers: "<s>" written by a chat template is the bos token...
    assert tokenizer.encode(text, add_special_tokens=False)[0] == 2
    assert tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True) == sp.encode(text)
    # ...and converted with split_special_tokens=True (kept on save), it is plain text, like SentencePiece.
    convert_sentencepiece(small_spm, tmp_path / "split", split_special_tokens=True)
    assert AutoTokenizer.from_pretrained(tmp_path / "split").encode(text, add_special_tokens=False) == sp.encode(text)


def test_rejects_models_it_cannot_match(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no SentencePiece model"):
        convert_sentencepiece(tmp_path)
    (tmp_path / "junk.model").write_bytes(b"\xff\x00not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        convert_sentencepiece(tmp_path / "junk.model")
    unigram = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sample_texts(3)),
        model_writer=unigram,
        model_type="unigram",
        vocab_size=300,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    (tmp_path / "uni.model").write_bytes(unigram.getvalue())
    with pytest.raises(ValueError, match="not BPE.*not identity"):
        convert_sentencepiece(tmp_path / "uni.model")


@pytest.fixture(scope="module")
def original():
    return spm.SentencePieceProcessor(model_file=str(ORIGINAL_SPM)), convert_sentencepiece(ORIGINAL_SPM)


@needs_original_spm
def test_original_tokenizer_parity_on_sample_and_adversarial(original) -> None:
    sp, tokenizer = original
    assert len(tokenizer) == sp.vocab_size() == 139_776
    texts = adversarial_strings(seed=1)
    if SHARED_CORPUS.is_dir():
        corpus = [t for docs in shared_documents(per_language=25).values() for t in docs]
        assert mismatches(sp, tokenizer, corpus, split_special_tokens=False) == []
        texts += corpus
    assert mismatches(sp, tokenizer, texts) == []


@needs_original_spm
@pytest.mark.slow
def test_original_tokenizer_parity_on_whole_corpus(original) -> None:
    """Every document of the eight languages (~20 MB); `benchmarks/tokenizer_spm_parity.py` prints the counts."""
    sp, tokenizer = original
    documents = shared_documents()
    assert sorted(documents) == sorted(LANGUAGES)
    for lang, texts in documents.items():
        assert mismatches(sp, tokenizer, texts, split_special_tokens=False) == [], lang


def test_cli_convert_spm(small_spm: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from wonton_hf.tokenization.cli import add_subcommands

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tokenizer", "convert-spm", str(small_spm.parent), "--output", str(tmp_path / "out")])
    assert args.func(args) == 0
    assert "Wrote" in capsys.readouterr().out
    sp = spm.SentencePieceProcessor(model_file=str(small_spm))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.encode(" " * 30 + "x\r\n\t12", add_special_tokens=False) == sp.encode(" " * 30 + "x\r\n\t12")
