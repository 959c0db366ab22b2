"""Instruction data of the Wonton chat model (report section 4) as TRL's conversational `messages` records.

Every source, whatever its layout, becomes rows `{"messages": [{"role", "content"}, ...], "source": name}`
with an optional leading system message and then strictly user/assistant/user/.../assistant turns: the
shape the `[INST]` template (`template.py`) renders and TRL's `assistant_only_loss` masks.

| format       | layout read                                                  | default hub id (real runs)         |
|--------------|--------------------------------------------------------------|------------------------------------|
| gpt4_llm     | alpaca style: instruction, input (optional), output          | vicgalle/alpaca-gpt4               |
| flan_v2      | inputs, targets                                              | Open-Orca/FLAN                     |
| tulu_v2      | messages (+ `dataset` naming the subset: cot, flan_v2, ...)  | allenai/tulu-v2-sft-mixture        |
| oasst        | OpenAssistant message trees, flat rows or nested trees       | OpenAssistant/oasst1 (or oasst2)   |
| messages     | a `messages` list (local JSONL / JSON / parquet)             | -                                  |
| prompt_completion | prompt + completion (strings or message lists)          | -                                  |

Bad records never stop a run: each is skipped and counted by reason (`missing_role`, `empty_answer`,
`wrong_alternation`, `non_string_content`, ...) in the source's `SkipCounter`; the first few are logged
with file and line. Local files are read line by line (not with `datasets.load_dataset("json")`) for that
reason: Arrow's schema inference fails the whole file on one record whose `content` is a list.

Mixtures (`build_chat_dataset`): `weight` is a per-source sampling rate, as in open-instruct's
`dataset_mixer`: 1.0 takes every record once, 0.5 a seeded random half, 2.0 every record twice.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from glob import glob
from typing import Any

from .._problems import Problem, bound, raise_problems
from ..data.sources import SkipCounter, iter_raw_records

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]

PAPER_LANGUAGES = ("en", "de", "fr", "es", "it", "zh", "ja", "ko")
"""The report's eight languages: the default OpenAssistant language filter."""
ROLE_ALIASES = {"human": "user", "prompter": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
DEFAULT_HUB_IDS = {
    "gpt4_llm": "vicgalle/alpaca-gpt4",
    "flan_v2": "Open-Orca/FLAN",
    "tulu_v2": "allenai/tulu-v2-sft-mixture",
    "oasst": "OpenAssistant/oasst1",
}
_LOCAL_FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl.gz",
    ".json.gz": "jsonl.gz",
    ".jsonl.zst": "jsonl.zst",
    ".parquet": "parquet",
}


class BadRecord(ValueError):
    """A record that cannot become a conversation; `reason` is the skip counter's key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ---- validation shared by every format ----


def normalise_messages(messages: Any) -> Messages:
    """A clean conversation or `BadRecord`: roles known, contents non-empty strings, turns alternating.

    A trailing user turn without an answer is dropped (it carries no loss) rather than the whole record.
    """
    if not isinstance(messages, list) or not messages:
        raise BadRecord("no_messages", "`messages` must be a non-empty list")
    clean: Messages = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRecord("malformed_message", f"message {i} is {type(message).__name__}, not a mapping")
        role = message.get("role", message.get("from"))
        content = message.get("content", message.get("value"))
        if not isinstance(role, str) or not role:
            raise BadRecord("missing_role", f"message {i}")
        role = ROLE_ALIASES.get(role.lower(), role.lower())
        if role not in ("system", "user", "assistant"):
            raise BadRecord("unknown_role", f"message {i} has role {role!r}")
        if not isinstance(content, str):
            raise BadRecord("non_string_content", f"message {i} content is {type(content).__name__}")
        clean.append({"role": role, "content": content})
    return _check_turns(clean)


def _check_turns(messages: Messages) -> Messages:
    if messages[0]["role"] == "system":
        system, turns = messages[:1], messages[1:]
        if not system[0]["content"].strip():
            system = []  # an empty system prompt says nothing; keep the conversation
    else:
        system, turns = [], messages
    if turns and turns[-1]["role"] == "user":
        turns = turns[:-1]
    if not turns:
        raise BadRecord("no_answer", "no assistant turn")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise BadRecord("wrong_alternation", f"turn {i} is {message['role']}, expected {expected}")
        if not message["content"].strip():
            raise BadRecord("empty_answer" if expected == "assistant" else "empty_question", f"turn {i}")
    return system + turns


# ---- one adapter per published layout: record -> messages (may raise BadRecord) ----


def from_gpt4_llm(record: dict[str, Any]) -> Messages:
    """GPT-4-LLM / Alpaca: the optional `input` follows the instruction after a blank line (Alpaca's own layout)."""
    instruction, extra, output = record.get("instruction"), record.get("input") or "", record.get("output")
    _require_strings(instruction=instruction, input=extra, output=output)
    question = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": question}, {"role": "assistant", "content": output}]


def from_flan_v2(record: dict[str, Any]) -> Messages:
    inputs, targets = record.get("inputs"), record.get("targets")
    _require_strings(inputs=inputs, targets=targets)
    return [{"role": "user", "content": inputs}, {"role": "assistant", "content": targets}]


def from_messages(record: dict[str, Any]) -> Messages:
    """Tulu v2 and any local `messages` file (also ShareGPT's `conversations` with from/value)."""
    messages = record.get("messages", record.get("conversations"))
    if messages is None:
        raise BadRecord("missing_field", "no `messages` (or `conversations`) field")
    return messages


def from_prompt_completion(record: dict[str, Any]) -> Messages:
    prompt, completion = record.get("prompt"), record.get("completion")
    if prompt is None or completion is None:
        raise BadRecord("missing_field", "needs both `prompt` and `completion`")
    if isinstance(prompt, list) and isinstance(completion, list):  # TRL's conversational prompt-completion
        return prompt + completion
    _require_strings(prompt=prompt, completion=completion)
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _require_strings(**fields: Any) -> None:
    for name, value in fields.items():
        if value is None:
            raise BadRecord("missing_field", f"`{name}`")
        if not isinstance(value, str):
            raise BadRecord("non_string_content", f"`{name}` is {type(value).__name__}")


# ---- OpenAssistant: message trees -> conversation paths ----


def oasst_conversations(
    rows: Iterable[dict[str, Any]], skips: SkipCounter, languages: Iterable[str] | None = PAPER_LANGUAGES
) -> Iterator[Messages]:
    """One conversation per message tree: from the root prompt, follow the best-ranked reply at every turn.

    Accepts the flat rows of the hub datasets (message_id, parent_id, role prompter/assistant, text, lang,
    rank, deleted, review_result) and the nested `*.trees.jsonl` exports (a `prompt` with `replies`).
    `rank` 0 is best; unranked replies come after ranked ones, in file order. Deleted or review-rejected
    messages are never followed. The language filter looks at the root prompt's `lang` (None: keep all).
    This is OpenAssistant's own "top-1" reduction: one path per tree, no near-duplicate branches.
    """
    allowed = set(languages) if languages is not None else None
    children: dict[str | None, list[dict[str, Any]]] = {}
    roots = []
    for row in _flatten_oasst(rows, skips):
        if row.get("parent_id") is None:
            roots.append(row)
        else:
            children.setdefault(row["parent_id"], []).append(row)
    for root in roots:
        if allowed is not None and root.get("lang") not in allowed:
            skips.skip("language_filtered", "oasst", None, str(root.get("lang")))
            continue
        path = _best_path(root, children)
        try:
            yield normalise_messages([{"role": m.get("role"), "content": m.get("text")} for m in path])
        except BadRecord as bad:
            skips.skip(bad.reason, "oasst", None, f"tree {root.get('message_tree_id', root.get('message_id'))}")


def _flatten_oasst(rows: Iterable[dict[str, Any]], skips: SkipCounter) -> Iterator[dict[str, Any]]:
    for row in rows:
        if "prompt" in row and isinstance(row["prompt"], dict):  # nested tree export
            stack = [(row["prompt"], None)]
            while stack:
                node, parent = stack.pop()
                yield {
                    **{k: v for k, v in node.items() if k != "replies"},
                    "parent_id": parent,
                    "message_tree_id": row.get("message_tree_id"),
                }
                stack.extend((reply, node.get("message_id")) for reply in node.get("replies") or [])
        elif "message_id" in row:
            yield row
        else:
            skips.skip("malformed_tree", "oasst", None, "neither a flat message row nor a nested tree")


def _usable(message: dict[str, Any]) -> bool:
    return not message.get("deleted") and message.get("review_result") is not False


def _best_path(root: dict[str, Any], children: dict[str | None, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    path, node = [root], root
    while True:
        replies = [m for m in children.get(node.get("message_id"), []) if _usable(m)]
        if not replies:
            return path
        # Stable sort: ranked replies by rank, then unranked ones in their original order.
        node = sorted(replies, key=lambda m: (m.get("rank") is None, m.get("rank") or 0))[0]
        path.append(node)


# ---- sources and mixtures ----


ADAPTERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "gpt4_llm": from_gpt4_llm,
    "flan_v2": from_flan_v2,
    "tulu_v2": from_messages,
    "messages": from_messages,
    "prompt_completion": from_prompt_completion,
}
FORMATS = (*ADAPTERS, "oasst")


@dataclass
class ChatSource:
    """One instruction data set of the mixture (a YAML `data.sources` entry in examples/configs/sft)."""

    name: str
    """unique name, used in the data report"""
    format: str
    """gpt4_llm | flan_v2 | tulu_v2 | oasst | messages | prompt_completion (`FORMATS`)"""
    path: str | list[str] | None = None
    """local files/globs (jsonl, json, jsonl.gz, jsonl.zst, parquet; in a run config `{samples}` is the package's
    samples) or a hub dataset id; None: the format's default hub id"""
    weight: float = 1.0
    """sampling rate: 1.0 every record once, 0.5 a seeded random half, 2.0 every record twice"""
    split: str = "train"
    """hub split (slices work: `train[:10000]`)"""
    subset: str | None = None
    """hub configuration name"""
    languages: list[str] | None = field(default_factory=lambda: list(PAPER_LANGUAGES))
    """oasst only: root-prompt languages kept (None keeps all)"""
    subsets: list[str] | None = None
    """tulu_v2 only: keep records whose `dataset` field starts with one of these (e.g. [cot, flan_v2])"""
    max_records: int | None = None
    """conversations kept from this source before weighting (None: all)"""

    def problems(self) -> list[Problem]:
        """What is wrong with the fields (the SFT config check reports the same under `data.sources[i]`)."""
        found: list[Problem] = [] if self.name else [("name", "must be a non-empty string")]
        if self.format not in FORMATS:
            found.append(("format", f"{self.format!r} is unknown; use one of {list(FORMATS)}"))
        elif self.path is None and self.format not in DEFAULT_HUB_IDS:
            found.append(("path", f"format {self.format} has no default data set: give a path"))
        found += bound(self, "weight", 0) + bound(self, "max_records", 1, optional=True)
        return found

    def validate(self) -> None:
        raise_problems(f"chat source `{self.name}`", self.problems())

    def local_files(self) -> list[str] | None:
        """The matched files if `path` names local files, None if it is a hub id; missing files are an error."""
        paths = [self.path] if isinstance(self.path, str) else list(self.path or [])
        if not paths:
            return None
        looks_local = [os.path.exists(p) or any(ch in p for ch in "*?[") or _local_format(p) for p in paths]
        if not any(looks_local):
            return None
        files = sorted({f for p in paths for f in (glob(p) if any(ch in p for ch in "*?[") else [p])})
        missing = [f for f in files if not os.path.isfile(f)] or ([] if files else paths)
        if missing:
            raise FileNotFoundError(f"chat source `{self.name}`: no such file(s) {missing}; fix `path`.")
        return files


def _local_format(path: str) -> str | None:
    return next(
        (fmt for ext, fmt in sorted(_LOCAL_FORMATS.items(), key=lambda kv: -len(kv[0])) if path.endswith(ext)), None
    )


def read_records(source: ChatSource, skips: SkipCounter) -> Iterator[dict[str, Any]]:
    """Raw records of a source: local files line by line (bad JSON counted), or a hub dataset via `datasets`."""
    files = source.local_files()
    if files is None:
        yield from _hub_records(source)
        return
    for path in files:
        fmt = _local_format(path)
        if fmt is None:
            raise ValueError(
                f"chat source `{source.name}`: cannot tell the format of {path}; use {sorted(_LOCAL_FORMATS)}."
            )
        if path.endswith(".json") and _is_json_array(path):  # GPT-4-LLM ships one JSON array, not JSON lines
            yield from _json_array(path, skips)
            continue
        for line, raw in enumerate(iter_raw_records(path, fmt, "line", skips)):
            if isinstance(raw, dict):
                yield raw
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                skips.skip("bad_json", path, line, str(err))
                continue
            if isinstance(record, dict):
                yield record
            else:
                skips.skip("not_an_object", path, line)


def _is_json_array(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(64).lstrip().startswith("[")


def _json_array(path: str, skips: SkipCounter) -> Iterator[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        skips.skip("bad_json", path, None, str(err))
        return
    for i, record in enumerate(records):
        if isinstance(record, dict):
            yield record
        else:
            skips.skip("not_an_object", path, i)


def _hub_records(source: ChatSource) -> Iterator[dict[str, Any]]:
    from datasets import load_dataset

    name = source.path if isinstance(source.path, str) else DEFAULT_HUB_IDS[source.format]
    logger.info("chat source %s: loading %s (split %s) with `datasets`", source.name, name, source.split)
    yield from load_dataset(name, source.subset, split=source.split)


def source_conversations(source: ChatSource, skips: SkipCounter) -> Iterator[Messages]:
    """Clean conversations of one source, bad records counted in `skips`."""
    records = read_records(source, skips)
    if source.format == "oasst":
        conversations: Iterable[Messages] = oasst_conversations(records, skips, source.languages)
    else:
        conversations = _adapted(records, source, skips)
    for count, messages in enumerate(conversations):
        if source.max_records is not None and count >= source.max_records:
            return
        yield messages


def _adapted(records: Iterable[dict[str, Any]], source: ChatSource, skips: SkipCounter) -> Iterator[Messages]:
    adapter = ADAPTERS[source.format]
    for i, record in enumerate(records):
        if source.subsets is not None and not str(record.get("dataset", "")).startswith(tuple(source.subsets)):
            continue  # a subset the user did not ask for: a choice, not a bad record
        try:
            yield normalise_messages(adapter(record))
        except BadRecord as bad:
            skips.skip(bad.reason, source.name, i, bad.detail)


@dataclass
class ChatDataReport:
    """What a mixture read: kept conversations and skips per source (logged, and printed by examples/sft.py)."""

    kept: dict[str, int] = field(default_factory=dict)
    sampled: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> str:
        parts = []
        for name in self.kept:
            skipped = self.skipped.get(name, {})
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(skipped.items())) or "none"
            parts.append(
                f"{name}: {self.kept[name]} conversations, {self.sampled[name]} after weighting; skipped: {reasons}"
            )
        return "; ".join(parts)


def build_chat_dataset(sources: list[ChatSource], seed: int = 42) -> tuple[Any, ChatDataReport]:
    """All sources -> one shuffled `datasets.Dataset` with `messages` and `source` columns, plus the report."""
    from datasets import Dataset

    if not sources:
        raise ValueError("chat data: no sources; list at least one under `data.sources`.")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"chat data: source names must be unique, got {names}.")
    for source in sources:
        source.validate()
        source.local_files()  # missing files fail here, before any reading
    rng = random.Random(seed)
    report, rows = ChatDataReport(), []
    for source in sources:
        skips = SkipCounter(source.name)
        conversations = list(source_conversations(source, skips))
        chosen = _weighted(conversations, source.weight, rng)
        rows.extend({"messages": m, "source": source.name} for m in chosen)
        report.kept[source.name], report.sampled[source.name] = len(conversations), len(chosen)
        report.skipped[source.name] = dict(skips.counts)
    logger.info("chat data: %s", report.summary())
    if not rows:
        raise ValueError(f"chat data: no usable conversation in any source ({report.summary()}).")
    rng.shuffle(rows)
    return Dataset.from_list(rows), report


def _weighted(items: list[Messages], weight: float, rng: random.Random) -> list[Messages]:
    whole, fraction = int(weight), weight - int(weight)
    chosen = items * whole
    if fraction > 0:
        chosen += rng.sample(items, round(fraction * len(items)))
    return chosen


def load_chat_sources(specs: list[dict[str, Any]]) -> list[ChatSource]:
    """YAML mappings -> `ChatSource`s; an unknown key names the source and the known keys."""
    known = set(ChatSource.__dataclass_fields__)
    sources = []
    for i, spec in enumerate(specs):
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"chat source {spec.get('name', i)}: unknown key(s) {unknown}; known: {sorted(known)}.")
        if "name" not in spec or "format" not in spec:
            raise ValueError(f"chat source {i}: `name` and `format` are required.")
        sources.append(ChatSource(**spec))
    return sources


__all__ = [
    "ADAPTERS",
    "BadRecord",
    "ChatDataReport",
    "ChatSource",
    "DEFAULT_HUB_IDS",
    "FORMATS",
    "PAPER_LANGUAGES",
    "build_chat_dataset",
    "from_flan_v2",
    "from_gpt4_llm",
    "from_messages",
    "from_prompt_completion",
    "load_chat_sources",
    "normalise_messages",
    "oasst_conversations",
    "read_records",
    "source_conversations",
]
