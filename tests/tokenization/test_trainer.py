"""BPE training: the paper's rules, vocabulary layout, saving/loading, inputs and their errors."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from wonton_hf.tokenization import SPECIAL_TOKENS, round_vocab_size, train_tokenizer
from wonton_hf.tokenization.trainer import MIN_VOCAB_SIZE, BPETrainingConfig

from .fixtures import SAMPLES, sample_texts, write_jsonl_gz

try:  # only the property test needs hypothesis (the dev extra); without it that test alone skips
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - depends on the environment
    given = None


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tok")
    result = train_tokenizer(texts=sample_texts(), vocab_size=1000, output_dir=out)
    return result, out


def tokens(tokenizer, text: str) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False))


def test_vocab_rounded_up_to_multiple_of_128(trained) -> None:
    result, _ = trained
    assert round_vocab_size(1000) == 1024 and round_vocab_size(1024) == 1024 and round_vocab_size(1025) == 1152
    assert result.vocab_size == len(result.tokenizer) == 1024
    assert result.requested_vocab_size == 1000
    assert "requested 1,000, rounded up" in result.summary()


def test_special_ids_match_the_original(trained) -> None:
    tok = trained[0].tokenizer
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)


def test_id_layout_bytes_and_space_runs_at_fixed_ids(trained) -> None:
    """Specials, the 256 byte tokens and the 23 space runs take the same ids whatever the corpus."""
    tok = trained[0].tokenizer
    assert tok.convert_tokens_to_ids([f"<0x{b:02X}>" for b in range(256)]) == list(range(4, 260))
    assert tok.convert_tokens_to_ids([" " * n for n in range(2, 25)]) == list(range(260, 283))
    vocab = tok.get_vocab()
    assert sorted(vocab.values()) == list(range(len(tok)))  # dense, no gaps or duplicates
    learnt = [t for t, i in vocab.items() if i >= 283]
    assert {"\n", "\t", "\r", " ", "7"} <= set(learnt)  # the required characters are in the alphabet


def test_byte_tokens_and_space_runs_are_not_special(trained) -> None:
    """Training registers them as the trainer's special tokens; the saved tokenizer must not treat them so."""
    tok = trained[0].tokenizer
    assert len(tok.backend_tokenizer.get_added_tokens_decoder()) == len(SPECIAL_TOKENS)
    text = "typed <0x41> and   three spaces"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.convert_tokens_to_ids("<0x41>") not in ids  # literal text, not the byte token
    assert tok.decode(ids, skip_special_tokens=True) == text  # space runs survive skip_special_tokens


def test_digits_are_single_tokens(trained) -> None:
    tok = trained[0].tokenizer
    assert tokens(tok, "2024") == ["2", "0", "2", "4"]
    assert tokens(tok, "v12.5")[-4:] == ["1", "2", ".", "5"]


@pytest.mark.parametrize("n", range(1, 25))
def test_each_space_run_up_to_24_is_one_token(trained, n: int) -> None:
    tok = trained[0].tokenizer
    assert tokens(tok, " " * n) == [" " * n]
    # Before a word, a run of 2+ spaces stays one token (code indentation); one space joins the word.
    if n >= 2:
        assert tokens(tok, " " * n + "return")[0] == " " * n


@pytest.mark.parametrize("n", [25, 48, 49, 60])
def test_longer_space_runs_split_into_runs_of_at_most_24(trained, n: int) -> None:
    tok = trained[0].tokenizer
    pieces = tokens(tok, " " * n)
    assert "".join(pieces) == " " * n
    assert len(pieces) == math.ceil(n / 24) and all(len(p) <= 24 for p in pieces)


def test_newline_tab_carriage_return_are_own_tokens(trained) -> None:
    tok = trained[0].tokenizer
    assert tokens(tok, "a\r\n\tb\n\nc") == ["a", "\r", "\n", "\t", "b", "\n", "\n", "c"]


def test_no_dummy_prefix(trained) -> None:
    tok = trained[0].tokenizer
    assert not tokens(tok, "The")[0].startswith(" ")
    assert tokens(tok, " The")[0].startswith(" ")


def test_unseen_script_falls_back_to_bytes_never_unk(trained) -> None:
    tok = trained[0].tokenizer
    text = "ქართული हिन्दी 🦜"  # Georgian, Devanagari, an emoji: none of them in the training texts
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids
    assert "<0xE1>" in tokens(tok, "ქ") and tokens(tok, "🦜") == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x9C>"]
    assert tok.decode(ids) == text


def _lossless(trained, text: str) -> None:
    tok = trained[0].tokenizer
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids or "<unk>" in text
    assert tok.decode(ids) == text


if given is not None:

    @settings(max_examples=300, deadline=None)
    @given(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
        | st.lists(
            st.sampled_from([" ", "  ", " " * 30, "\t", "\r\n", "\n", "7", "x", "日本", "😀", "\x00", "é"]),
            max_size=30,
        ).map("".join)
    )
    def test_decode_encode_is_lossless(trained, text: str) -> None:
        _lossless(trained, text)

else:  # pragma: no cover - depends on the environment

    @pytest.mark.skip(reason="property test: needs hypothesis (pip install -e .[dev])")
    def test_decode_encode_is_lossless() -> None:
        pass


def test_decode_encode_is_lossless_on_hard_cases(trained) -> None:
    """The property test's corners, always run (also without hypothesis)."""
    for text in ["", " ", " " * 30, "\t\r\n", "日本😀\x00é", "x  7\n\n", "<unk>", "ქართული हिन्दी 🦜"]:
        _lossless(trained, text)


def test_saved_directory_loads_with_autotokenizer(trained) -> None:
    result, out = trained
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.name for p in Path(out).iterdir()
    }
    loaded = AutoTokenizer.from_pretrained(out)
    text = SAMPLES["en"] + " " + SAMPLES["ja"]
    assert loaded.encode(text, add_special_tokens=False) == result.tokenizer.encode(text, add_special_tokens=False)
    assert loaded.decode(loaded.encode(text, add_special_tokens=False)) == text
    assert len(loaded) == 1024 and loaded.pad_token_id == 0 and loaded.eos_token_id == 3


def test_small_corpus_pads_with_reserved_tokens(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        result = train_tokenizer(texts=["ab ab ab"], vocab_size=MIN_VOCAB_SIZE)
    assert len(result.tokenizer) == round_vocab_size(MIN_VOCAB_SIZE)
    assert result.reserved_tokens > 0 and "ran out of pairs" in caplog.text


def test_alphabet_larger_than_the_vocabulary_is_cut_to_fit() -> None:
    """`alphabet_fraction=1` with more distinct characters than free ids: the rarest fall back to bytes."""
    cjk = [chr(0x4E00 + i) for i in range(300)]  # 300 distinct characters: 50 frequent, 249 seen 3 times, 1 once
    texts = [" ".join(cjk[i : min(i + 20, 299)]) for i in range(0, 299, 20)] * 3 + [" ".join(cjk[:50])] * 20
    texts.append(cjk[-1])
    result = train_tokenizer(texts=texts, vocab_size=384, alphabet_fraction=1.0)
    tok = result.tokenizer
    assert len(tok) == 384 and result.reserved_tokens == 0
    vocab = tok.get_vocab()
    assert cjk[0] in vocab and cjk[-1] not in vocab  # the most frequent kept, the rarest cut
    text = "".join(cjk)
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.unk_token_id not in tok.encode(text, add_special_tokens=False)


def test_finalise_rejects_a_base_larger_than_the_vocabulary() -> None:
    """The guard behind the alphabet cut: a clear error, where the old trimming loop never ended."""
    from tokenizers import Tokenizer, models

    from wonton_hf.tokenization.trainer import _finalise

    pipeline = Tokenizer(models.BPE(vocab={chr(0x4E00 + i): i for i in range(400)}, merges=[]))
    with pytest.raises(ValueError, match="alphabet_fraction"):
        _finalise(pipeline, 384)


def test_files_named_sources_and_weights(tmp_path: Path) -> None:
    en = write_jsonl_gz(tmp_path / "en.jsonl.gz", [SAMPLES["en"]] * 40, "en")
    ja = write_jsonl_gz(tmp_path / "ja.jsonl.gz", [SAMPLES["ja"]] * 5, "ja")
    txt = tmp_path / "code.txt"
    txt.write_text("def f(x):\n    return x + 1\n" * 3, encoding="utf-8")
    natural = train_tokenizer([f"en={en}", f"ja={ja}", f"code={txt}"], vocab_size=512)
    assert natural.stats.documents == {"en": 40, "ja": 5, "code": 6}  # txt: one document per line
    even = train_tokenizer([f"en={en}", f"ja={ja}"], vocab_size=512, weights={"en": 1, "ja": 1})
    # Byte shares follow the weights; English is read only as far as its share needs.
    assert even.stats.documents["ja"] == 5 and even.stats.documents["en"] < 40
    share = even.stats.bytes["en"] / sum(even.stats.bytes.values())
    assert 0.4 < share < 0.6


def test_undecodable_bytes_are_replaced_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "hello world"}).encode()
    broken = b'{"text": "caf\xe9 \xff\xfe ok"}'
    surrogate = b'{"text": "lone \\udc80 surrogate"}'
    path.write_bytes(b"\n".join([good, broken, surrogate, b"not json", b'{"other": 1}']) + b"\n")
    result = train_tokenizer([str(path)], vocab_size=512)
    assert result.stats.replaced_bytes == {"bad": 4}
    assert result.stats.documents == {"bad": 3}
    assert result.stats.skipped["bad"] == {"malformed_json": 1, "missing_text_field": 1}
    assert "4 undecodable bytes replaced" in result.summary()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"texts": ["x"], "vocab_size": 100}, ValueError, "vocab_size"),
        ({"inputs": ["/nonexistent/dir/*.jsonl"]}, FileNotFoundError, "no file matches"),
        ({"texts": []}, ValueError, "no text"),
        ({"texts": "one string"}, ValueError, "iterable of strings"),
        ({}, ValueError, "exactly one of"),
        ({"texts": ["x"], "vocab_size": 512, "colour": 3}, ValueError, "unknown option `colour`"),
    ],
)
def test_bad_input_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        train_tokenizer(**kwargs)


def test_errors_come_before_reading(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        train_tokenizer([str(tmp_path / "data.csv")], vocab_size=512)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="every input file is empty"):
        train_tokenizer([str(tmp_path / "empty.jsonl")], vocab_size=512)
    good = write_jsonl_gz(tmp_path / "en.jsonl.gz", ["hi"], "en")
    with pytest.raises(ValueError, match="unknown sources"):
        train_tokenizer([f"en={good}"], vocab_size=512, weights={"fr": 1})
    with pytest.raises(ValueError, match="vocab_size"):
        BPETrainingConfig(vocab_size=MIN_VOCAB_SIZE - 1).validate()


def test_cli_train(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from wonton_hf.tokenization.cli import add_subcommands

    corpus = write_jsonl_gz(tmp_path / "en.jsonl.gz", sample_texts(3), "en")
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "tokenizer",
            "train",
            "--input",
            f"en={corpus}",
            "--vocab-size",
            "600",
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
            "--weight",
            "en=1",
        ]
    )
    assert args.func(args) == 0
    assert "vocabulary 640" in capsys.readouterr().out
    assert len(AutoTokenizer.from_pretrained(tmp_path / "out")) == 640
    with pytest.raises(ValueError, match="NAME=NUMBER"):
        args = parser.parse_args(["tokenizer", "train", "--input", str(corpus), "--output", "x", "--weight", "en"])
        args.func(args)


def test_generator_input_is_consumed_once() -> None:
    """The demo path: any iterator of texts, read once (no second pass over the corpus)."""
    seen = []

    def stream():
        for text in sample_texts(2):
            seen.append(1)
            yield text

    result = train_tokenizer(texts=stream(), vocab_size=512)
    assert len(seen) == result.stats.total_documents == len(sample_texts(2))


def test_data_scheduler_sources_with_normaliser(tmp_path: Path) -> None:
    from wonton_hf.data.sources import DataSource

    path = tmp_path / "chat.jsonl"
    records = [{"q": "Wie spät ist es?", "a": "Es ist 12 Uhr."}, {"q": 1}, {"a": "x"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")

    def qa(record: dict) -> str:
        return record["q"] + "\n" + record["a"]

    source = DataSource(name="chat", paths=[str(path)], normaliser=qa)
    result = train_tokenizer([source], vocab_size=512)
    assert result.stats.documents == {"chat": 1}
    assert result.stats.skipped["chat"] == {"normaliser_error": 2}


def test_importing_the_trainer_imports_neither_torch_nor_transformers() -> None:
    """`wonton-hf tokenizer train` starts in a fraction of a second: transformers loads only to wrap the result."""
    import subprocess
    import sys

    code = (
        "import sys; import wonton_hf.tokenization.trainer; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
