"""Tokenizer report: numbers checked by hand on a tiny corpus, all three tokenizer kinds, the files written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from wonton_hf.tokenization.report import TokenizerUnderTest, measure, tokenizer_report
from wonton_hf.tokenization.sentencepiece import convert_sentencepiece

from .fixtures import sample_texts, train_small_spm, write_jsonl_gz


@pytest.fixture()
def hand_tokenizer(tmp_path: Path) -> Path:
    """Characters a, b, c, space; merges a+b -> "ab" then " "+c -> " c"; no pre-tokenizer."""
    vocab = {"a": 0, "b": 1, "c": 2, " ": 3, "ab": 4, " c": 5}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b"), (" ", "c")]))
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_numbers_match_hand_count(hand_tokenizer: Path) -> None:
    # "ab abc c" -> [ab][ ][ab][c][ c]: 5 tokens for 8 bytes / 8 characters.
    # Words: "ab" = 1 token; "abc" = ab + c = 2 (continued); "c" = 1 (" c" starts on the space and runs into it).
    stats = measure(TokenizerUnderTest("hand", hand_tokenizer), "en", ["ab abc c"])
    assert stats.bytes_per_token == pytest.approx(8 / 5)
    assert stats.chars_per_token == pytest.approx(8 / 5)
    assert stats.fertility == pytest.approx(4 / 3)
    assert stats.continued_words == pytest.approx(1 / 3)
    assert stats.tokens_per_second > 0


def test_multibyte_characters_count_bytes_and_chars_apart(tmp_path: Path) -> None:
    tokenizer = Tokenizer(models.BPE(vocab={"é": 0, "<0xC3>": 1}, merges=[]))
    tokenizer.save(str(tmp_path / "t.json"))
    stats = measure(TokenizerUnderTest("t", tmp_path / "t.json"), "fr", ["éé"])
    assert stats.bytes_per_token == pytest.approx(2.0) and stats.chars_per_token == pytest.approx(1.0)
    assert stats.fertility == pytest.approx(2.0) and stats.continued_words == pytest.approx(1.0)


def test_unspaced_languages_get_no_fertility(hand_tokenizer: Path) -> None:
    stats = measure(TokenizerUnderTest("hand", hand_tokenizer), "zh", ["ab abc c"])
    assert stats.fertility is None and stats.continued_words is None
    assert stats.bytes_per_token == pytest.approx(8 / 5)


@pytest.fixture(scope="module")
def small_spm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_spm(tmp_path_factory.mktemp("spm") / "small.model", sample_texts(), vocab_size=600)


def test_report_on_sentencepiece_and_its_conversion_agree(
    small_spm: Path, language_corpus: Path, tmp_path: Path
) -> None:
    convert_sentencepiece(small_spm, tmp_path / "converted")
    rows = tokenizer_report([f"spm={small_spm}", f"hf={tmp_path / 'converted'}"], language_corpus, tmp_path / "report")
    by = {(r.tokenizer, r.language): r for r in rows}
    assert len(rows) == 16
    for lang in ("en", "de", "ja", "ko", "zh"):
        a, b = by[("spm", lang)], by[("hf", lang)]
        assert (a.bytes_per_token, a.chars_per_token, a.fertility, a.continued_words) == pytest.approx(
            (b.bytes_per_token, b.chars_per_token, b.fertility, b.continued_words)
        )
    assert by[("spm", "ja")].fertility is None and by[("spm", "ko")].fertility is not None
    table = (tmp_path / "report" / "report.md").read_text()
    assert table.startswith("| tokenizer | language |") and table.count("\n") == 18
    assert len(json.loads((tmp_path / "report" / "report.json").read_text())) == 16
    assert (tmp_path / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_report_and_errors(hand_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from wonton_hf.tokenization.cli import add_subcommands

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_jsonl_gz(corpus / "lo_en.jsonl.gz", ["ab abc c"], "en")
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "tokenizer",
            "report",
            "--tokenizer",
            f"hand={hand_tokenizer}",
            "--corpus",
            str(corpus),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert args.func(args) == 0
    assert "| hand | en | 1 | 1.600 |" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tokenizer_report([f"x={tmp_path / 'missing'}"], corpus)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        tokenizer_report([f"x={corpus}"], corpus)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        tokenizer_report([f"hand={hand_tokenizer}"], tmp_path / "nope")
    with pytest.raises(ValueError, match="unique"):
        tokenizer_report([f"a={hand_tokenizer}", f"a={hand_tokenizer}"], corpus)
