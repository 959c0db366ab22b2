"""The judge's prompts, the rating parser and the question files (no model, no server)."""

from __future__ import annotations

import json

import pytest

from wonton_hf.evaluation.judge.prompts import build_judge_prompt, parse_rating
from wonton_hf.evaluation.judge.questions import load_questions, parse_question


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("Good answer. Rating: [[8]]", 8.0),
        ("Rating: [[7.5]]", 7.5),
        ('The format is "Rating: [[5]]". My verdict: [[9]]', 9.0),  # the last rating, not the quoted example
        ("Rating: [6]", 6.0),  # MT-Bench's fallback
        ("Rating: excellent", None),
        ("Rating: [[11]]", None),  # off the scale: unparsed, not clipped
        ("Rating: [[0]]", None),
        ("", None),
    ],
)
def test_parse_rating(reply, rating):
    assert parse_rating(reply) == rating


def test_prompts_follow_mt_bench():
    single = build_judge_prompt(["Q1"], ["A1"], 0)
    assert single.name == "single-v1"
    assert single.messages[0]["content"] == "You are a helpful assistant."
    user = single.messages[1]["content"]
    assert user.startswith("[Instruction]\nPlease act as an impartial judge")
    assert '"[[rating]]", for example: "Rating: [[5]]"' in user
    assert user.endswith("[Question]\nQ1\n\n[The Start of Assistant's Answer]\nA1\n[The End of Assistant's Answer]")

    math = build_judge_prompt(["Q1"], ["A1"], 0, ["R1"])
    assert math.name == "single-math-v1"
    assert "[The Start of Reference Answer]\nR1\n[The End of Reference Answer]" in math.messages[1]["content"]

    second = build_judge_prompt(["Q1", "Q2"], ["A1", "A2"], 1)
    assert second.name == "single-v1-multi-turn"
    assert "answer to the second user question" in second.messages[0]["content"]
    assert second.messages[1]["content"] == (
        "<|The Start of Assistant A's Conversation with User|>\n\n### User:\nQ1\n\n### Assistant A:\nA1\n\n"
        "### User:\nQ2\n\n### Assistant A:\nA2\n\n<|The End of Assistant A's Conversation with User|>"
    )
    math2 = build_judge_prompt(["Q1", "Q2"], ["A1", "A2"], 1, ["R1", "R2"])
    assert math2.name == "single-math-v1-multi-turn"
    assert "### Reference answer:\nR2\n\n<|The End of Reference Answer|>" in math2.messages[1]["content"]
    # A reference for turn 1 only: turn 2 is judged without one.
    assert build_judge_prompt(["Q1", "Q2"], ["A1", "A2"], 1, ["R1", ""]).name == "single-v1-multi-turn"
    third = build_judge_prompt(["Q1", "Q2", "Q3"], ["A1", "A2", "A3"], 2)
    assert "answer to the last user question" in third.messages[0]["content"]


def test_sample_questions_are_multilingual_and_multi_turn():
    questions, description = load_questions("sample")
    assert "sample" in description
    assert {q.language for q in questions} == {"en", "de", "fr", "zh", "ja", "es", "ko", "it"}
    assert {len(q.turns) for q in questions} == {1, 2}
    assert any(q.reference for q in questions)
    assert len(load_questions("sample", limit=3)[0]) == 3


def test_question_files(tmp_path):
    path = tmp_path / "q.jsonl"
    records = [
        {"question_id": 1, "category": "writing", "turns": ["Hallo?", "Und?"], "language": "de"},
        {"id": "x", "prompt": "一句话介绍北京。", "language": "zh"},
        {"question_id": 2, "category": "math", "turns": ["1+1?", "2+2?"], "reference": ["2"]},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n", encoding="utf-8")
    questions, _ = load_questions(path)
    assert [q.question_id for q in questions] == ["1", "x", "2"]
    assert questions[1].turns == ("一句话介绍北京。",) and questions[1].category == "general"
    assert questions[2].reference == ("2", "")

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_questions(tmp_path / "missing.jsonl")
    path.write_text(json.dumps(records[0]) + "\n" + json.dumps(records[0]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="appears twice"):
        load_questions(path)
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        load_questions(path)
    with pytest.raises(ValueError, match="`turns`"):
        parse_question({"question_id": 1, "turns": []}, "here")


def test_mt_bench_default_needs_the_network_or_a_cached_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("WONTON_HF_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set.*--questions"):
        load_questions("mt_bench")
    # A cached copy (what a first online run leaves) is read offline, with GPT-4's references for math.
    cache = tmp_path / "mt_bench"
    cache.mkdir()
    (cache / "question.jsonl").write_text(
        json.dumps({"question_id": 111, "category": "math", "turns": ["t1", "t2"]})
        + "\n"
        + json.dumps({"question_id": 81, "category": "writing", "turns": ["w1", "w2"]})
        + "\n",
        encoding="utf-8",
    )
    (cache / "reference_gpt-4.jsonl").write_text(
        json.dumps({"question_id": 111, "choices": [{"index": 0, "turns": ["r1", "r2"]}]}) + "\n", encoding="utf-8"
    )
    questions, description = load_questions("mt_bench")
    assert "MT-Bench" in description
    assert questions[0].reference == ("r1", "r2") and questions[1].reference is None
