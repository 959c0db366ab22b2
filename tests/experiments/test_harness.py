"""examples/experiments/harness.py: the held-out set of the mixing and schedules experiments (the package's split,
the first N held-out documents cut to T tokens, exact bytes), the code source's documents, the statistics."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from wonton_hf.data import DataSource, OnlineDataScheduler
from wonton_hf.data.heldout import is_held_out

from ..data.data_fixtures import corpus, doc_text, tokenizer  # noqa: F401  (fixtures)

SHARE = 0.3


@pytest.fixture(scope="module")
def harness(experiments_on_path):
    return importlib.import_module("harness")


def test_the_eval_set_is_the_first_held_out_documents_cut_to_their_first_tokens(harness, corpus, tokenizer):  # noqa: F811
    sources = [DataSource(name=n, paths=[str(p) for p in corpus[n]]) for n in ("de", "zh")]
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=32, held_out_share=SHARE)
    dataset = harness.document_eval_dataset(scheduler, documents=6, tokens_per_document=5)
    assert dataset.names == ["de", "zh"]
    for k, (name, count) in enumerate((("de", 150), ("zh", 150))):
        texts = [doc_text(name, i) for i in range(count) if is_held_out(doc_text(name, i), SHARE)][:6]
        want = []
        for text in texts:  # BOS (when the tokenizer has one) + the text's tokens + EOS, then the first 5
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            head = ([tokenizer.bos_token_id] if scheduler.settings.bos_token_id is not None else []) + ids
            want += head[:5]
        got = dataset.sets[k]
        assert got.documents == 6
        ids = np.concatenate([w["input_ids"] for w in got.windows])
        labels = np.concatenate([w["labels"] for w in got.windows])
        assert ids[: len(want)].tolist() == want and (labels[len(want) :] == -100).all()
        # every document's first token is unscored (it would be predicted from the previous document)
        assert (labels[::5][: len(texts)] == -100).all()
        assert 0 < sum(got.scored_bytes) < sum(len(t.encode()) for t in texts)


def test_too_few_held_out_documents_is_an_error_naming_the_fix(harness, corpus, tokenizer):  # noqa: F811
    scheduler = OnlineDataScheduler(
        [DataSource(name="de", paths=[str(p) for p in corpus["de"]])], tokenizer, seq_len=32, held_out_share=SHARE
    )
    with pytest.raises(SystemExit, match="held-out-share"):
        harness.document_eval_dataset(scheduler, documents=1000, tokens_per_document=5)


def test_code_documents_are_modules_cut_at_blank_lines(harness, tmp_path):
    text = "\n\n".join(f"def f{i}():\n    return {i}" for i in range(100))
    pieces = harness._pieces(text, 200)
    assert "\n\n".join(pieces) == text and all(len(p) <= 200 for p in pieces) and len(pieces) > 5
    assert harness._pieces("x" * 500, 200) == ["x" * 500], "a block longer than the limit stays whole"


def test_describe_and_paired(harness):
    from scipy import stats

    d = harness.describe([1.0, 2.0, 4.0])
    se = stats.sem([1.0, 2.0, 4.0])
    assert d["mean"] == pytest.approx(7 / 3) and d["se"] == pytest.approx(se) and d["n"] == 3
    lo, hi = stats.t.interval(0.95, 2, loc=7 / 3, scale=se)
    assert (d["lo"], d["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert harness.describe([3.0]) == {"mean": 3.0, "se": None, "lo": None, "hi": None, "n": 1}
    p = harness.paired({0: 1.0, 1: 2.0, 2: 5.0}, {0: 2.0, 1: 2.5, 3: 9.0})
    assert p["seeds"] == [0, 1] and p["mean"] == pytest.approx(-0.75) and p["below_zero"] == 2
    assert harness.fmt(p).endswith("(n=2)") and not math.isnan(p["se"])
