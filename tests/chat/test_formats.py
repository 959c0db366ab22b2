"""The data adapters on sample records written here, including the OpenAssistant tree walk and skip counts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wonton_hf.chat.formats import (
    ChatSource,
    build_chat_dataset,
    load_chat_sources,
    normalise_messages,
    source_conversations,
)
from wonton_hf.data.sources import SkipCounter


def write_jsonl(path: Path, records: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read(source: ChatSource) -> tuple[list, dict[str, int]]:
    skips = SkipCounter(source.name)
    return list(source_conversations(source, skips)), skips.counts


def test_gpt4_llm_alpaca_records(tmp_path):
    records = [
        {"instruction": "Translate into German.", "input": "Good morning.", "output": "Guten Morgen."},
        {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
        {"instruction": "Empty answer.", "input": "", "output": "   "},
        {"instruction": ["not", "text"], "input": "", "output": "x"},
        {"input": "no instruction", "output": "x"},
    ]
    path = tmp_path / "alpaca_gpt4_data.json"  # GPT-4-LLM ships a JSON array
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    conversations, skipped = read(ChatSource("gpt4", "gpt4_llm", str(path)))
    assert conversations == [
        [
            {"role": "user", "content": "Translate into German.\n\nGood morning."},
            {"role": "assistant", "content": "Guten Morgen."},
        ],
        [{"role": "user", "content": "Name a primary colour."}, {"role": "assistant", "content": "Red."}],
    ]
    assert skipped == {"empty_answer": 1, "non_string_content": 1, "missing_field": 1}


def test_flan_v2_inputs_targets(tmp_path):
    path = write_jsonl(
        tmp_path / "flan.jsonl",
        [
            {"inputs": "Is the review positive? Great pasta!", "targets": "yes", "_task_source": "t0"},
            {"inputs": "Translate to Italian: good night", "targets": "buona notte"},
            {"inputs": "no target"},
            "{broken json",
            {"inputs": "x", "targets": 5},
        ],
    )
    conversations, skipped = read(ChatSource("flan", "flan_v2", str(path)))
    assert [c[1]["content"] for c in conversations] == ["yes", "buona notte"]
    assert conversations[0][0] == {"role": "user", "content": "Is the review positive? Great pasta!"}
    assert skipped == {"missing_field": 1, "bad_json": 1, "non_string_content": 1}


def tulu_records():
    def conv(*turns):
        return [{"role": r, "content": c} for r, c in turns]

    return [
        {
            "dataset": "cot",
            "id": "cot_0",
            "messages": conv(("user", "2+3? Think step by step."), ("assistant", "2+3=5. So 5.")),
        },
        {"dataset": "flan_v2", "id": "f_1", "messages": conv(("user", "Yes or no?"), ("assistant", "yes"))},
        {
            "dataset": "sharegpt",
            "id": "s_2",
            "messages": conv(
                ("system", "Be kind."),
                ("user", "Hi"),
                ("assistant", "Hello!"),
                ("user", "Bye"),
                ("assistant", "Goodbye!"),
            ),
        },
        {"dataset": "sharegpt", "id": "s_3", "messages": conv(("user", "a"), ("user", "b"), ("assistant", "c"))},
        {
            "dataset": "sharegpt",
            "id": "s_4",
            "messages": [{"content": "no role"}, {"role": "assistant", "content": "x"}],
        },
        {"dataset": "sharegpt", "id": "s_5", "messages": conv(("user", "q"), ("assistant", ""))},
        {
            "dataset": "sharegpt",
            "id": "s_6",
            "messages": [{"role": "user", "content": [{"type": "text"}]}, {"role": "assistant", "content": "x"}],
        },
        {"dataset": "cot", "id": "cot_7", "messages": conv(("user", "unanswered"))},
        {"dataset": "lima", "id": "l_8", "messages": conv(("user", "Q"), ("assistant", "A"), ("user", "dangling"))},
    ]


def test_tulu_v2_messages_and_bad_records(tmp_path):
    path = write_jsonl(tmp_path / "tulu.jsonl", tulu_records())
    conversations, skipped = read(ChatSource("tulu", "tulu_v2", str(path)))
    assert len(conversations) == 4
    assert conversations[2][0] == {"role": "system", "content": "Be kind."} and len(conversations[2]) == 5
    assert conversations[3] == [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ]  # dangling turn dropped
    assert skipped == {
        "wrong_alternation": 1,
        "missing_role": 1,
        "empty_answer": 1,
        "non_string_content": 1,
        "no_answer": 1,
    }


def test_tulu_v2_cot_subset(tmp_path):
    path = write_jsonl(tmp_path / "tulu.jsonl", tulu_records())
    conversations, skipped = read(ChatSource("cot", "tulu_v2", str(path), subsets=["cot"]))
    assert conversations == [
        [{"role": "user", "content": "2+3? Think step by step."}, {"role": "assistant", "content": "2+3=5. So 5."}]
    ]
    assert skipped == {"no_answer": 1}  # the unanswered cot record; other subsets are not counted as bad


def oasst_rows():
    def row(mid, parent, role, text, lang="en", rank=None, **extra):
        return {
            "message_id": mid,
            "parent_id": parent,
            "role": role,
            "text": text,
            "lang": lang,
            "rank": rank,
            "deleted": extra.get("deleted", False),
            "review_result": extra.get("review_result", True),
            "message_tree_id": extra.get("tree", mid[0]),
        }

    return [
        row("a0", None, "prompter", "How do I keep basil alive?"),
        row("a1", "a0", "assistant", "Sun, and water when the soil is dry.", rank=0),
        row("a2", "a0", "assistant", "It is a plant.", rank=1),
        row("a3", "a1", "prompter", "How often?", rank=0),
        row("a4", "a1", "prompter", "Thanks", rank=1),
        row("a5", "a3", "assistant", "Every two days.", rank=1),
        row("a6", "a3", "assistant", "Twice a week; moist, never soggy.", rank=0),
        row("a7", "a3", "assistant", "Hourly.", rank=None, deleted=True),
        row("a8", "a6", "prompter", "ok", rank=0),  # unanswered last prompt: dropped
        row("b0", None, "prompter", "Lac ou mer ?", lang="fr"),
        row("b1", "b0", "assistant", "Une mer est salée.", lang="fr", rank=None),
        row("b2", "b0", "assistant", "Rejected.", lang="fr", rank=None, review_result=False),
        row("c0", None, "prompter", "Самая длинная река?", lang="ru"),
        row("c1", "c0", "assistant", "Нил.", lang="ru", rank=0),
        row("d0", None, "prompter", "Nobody answered", lang="en"),
    ]


def test_oasst_flat_rows_follow_best_ranked_replies(tmp_path):
    path = write_jsonl(tmp_path / "oasst.jsonl", oasst_rows())
    conversations, skipped = read(ChatSource("oasst", "oasst", str(path)))
    assert conversations == [
        [
            {"role": "user", "content": "How do I keep basil alive?"},
            {"role": "assistant", "content": "Sun, and water when the soil is dry."},
            {"role": "user", "content": "How often?"},
            {"role": "assistant", "content": "Twice a week; moist, never soggy."},
        ],
        [{"role": "user", "content": "Lac ou mer ?"}, {"role": "assistant", "content": "Une mer est salée."}],
    ]
    assert skipped == {"language_filtered": 1, "no_answer": 1}


def test_oasst_language_filter_off_and_nested_trees(tmp_path):
    rows = {r["message_id"]: dict(r) for r in oasst_rows()}

    def nest(mid):
        node = {k: v for k, v in rows[mid].items() if k not in ("parent_id", "message_tree_id")}
        node["replies"] = [nest(c) for c, r in rows.items() if r["parent_id"] == mid]
        return node

    trees = [
        {"message_tree_id": root, "tree_state": "ready_for_export", "prompt": nest(root)}
        for root in ("a0", "b0", "c0", "d0")
    ]
    path = write_jsonl(tmp_path / "oasst2.trees.jsonl", trees)
    nested, skipped = read(ChatSource("oasst2", "oasst", str(path), languages=None))
    flat, _ = read(
        ChatSource("oasst1", "oasst", str(write_jsonl(tmp_path / "flat.jsonl", oasst_rows())), languages=None)
    )
    assert nested == flat and len(nested) == 3  # ru kept now
    assert skipped == {"no_answer": 1}


def test_local_messages_and_prompt_completion_parquet(tmp_path):
    messages = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]]
    pq.write_table(pa.Table.from_pylist([{"messages": m} for m in messages]), tmp_path / "m.parquet")
    pq.write_table(
        pa.Table.from_pylist([{"prompt": "2+2?", "completion": "4"}, {"prompt": "x", "completion": ""}]),
        tmp_path / "pc.parquet",
    )
    conversational = write_jsonl(
        tmp_path / "pc.jsonl",
        [{"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]}],
    )
    assert read(ChatSource("m", "messages", str(tmp_path / "m.parquet")))[0] == messages
    conversations, skipped = read(ChatSource("pc", "prompt_completion", str(tmp_path / "pc.parquet")))
    assert conversations == [[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]]
    assert skipped == {"empty_answer": 1}
    assert read(ChatSource("pcc", "prompt_completion", str(conversational)))[0] == [
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    ]


def test_weighted_mixture(tmp_path):
    flan = write_jsonl(tmp_path / "flan.jsonl", [{"inputs": f"q{i}", "targets": f"a{i}"} for i in range(10)])
    tulu = write_jsonl(tmp_path / "tulu.jsonl", tulu_records())
    sources = load_chat_sources(
        [
            {"name": "flan", "format": "flan_v2", "path": str(flan), "weight": 0.5},
            {"name": "tulu", "format": "tulu_v2", "path": str(tulu), "weight": 2},
            {"name": "glob", "format": "flan_v2", "path": str(tmp_path / "fl*.jsonl"), "weight": 1.5, "max_records": 4},
        ]
    )
    dataset, report = build_chat_dataset(sources, seed=0)
    assert report.kept == {"flan": 10, "tulu": 4, "glob": 4}
    assert report.sampled == {"flan": 5, "tulu": 8, "glob": 6}
    assert len(dataset) == 19 and dataset.column_names == ["messages", "source"]
    assert sorted(set(dataset["source"])) == ["flan", "glob", "tulu"]
    assert report.skipped["tulu"]["wrong_alternation"] == 1
    again, _ = build_chat_dataset(
        load_chat_sources([{"name": "flan", "format": "flan_v2", "path": str(flan), "weight": 0.5}]), seed=0
    )
    assert (
        again["messages"]
        == build_chat_dataset(
            load_chat_sources([{"name": "flan", "format": "flan_v2", "path": str(flan), "weight": 0.5}]), seed=0
        )[0]["messages"]
    )


def test_configuration_errors_fail_before_reading(tmp_path):
    with pytest.raises(ValueError, match="format"):
        build_chat_dataset([ChatSource("x", "alpaca", str(tmp_path / "a.jsonl"))])
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_chat_dataset([ChatSource("x", "flan_v2", str(tmp_path / "missing.jsonl"))])
    with pytest.raises(ValueError, match="unknown key"):
        load_chat_sources([{"name": "x", "format": "flan_v2", "paths": "a.jsonl"}])
    with pytest.raises(ValueError, match="no usable conversation"):
        build_chat_dataset([ChatSource("x", "flan_v2", str(write_jsonl(tmp_path / "bad.jsonl", [{"inputs": "q"}])))])


def test_hub_ids_are_the_defaults():
    assert ChatSource("t", "tulu_v2").local_files() is None
    assert ChatSource("o", "oasst", "OpenAssistant/oasst2").local_files() is None
    assert normalise_messages([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
