"""Question sets for the judged chat evaluation: MT-Bench by default, any JSONL of single- or multi-turn questions.

A record is MT-Bench's own schema (FastChat's `question.jsonl`), so MT-Bench files and their translations load
unchanged, plus one optional field of ours:

    {"question_id": 81, "category": "writing", "turns": ["...", "..."], "reference": ["...", "..."], "language": "en"}

- `turns`: the user turns; a single string (or a `prompt` / `question` field) is a one-turn question.
- `reference`: reference answers, one per turn (MT-Bench's math/reasoning/coding questions); the judge then uses
  the reference-guided prompt.
- `language`: for per-language means (default "en"; MT-Bench is English).

MT-Bench cannot ship with the package or be downloaded in tests: the default (`mt_bench`) is a reference to the
FastChat repository's files, fetched on a real run and cached under `~/.cache/wonton_hf/mt_bench/`. Its reference
answers (GPT-4's, in a second file) are attached to the categories for which MT-Bench grades against a reference.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MT_BENCH = "mt_bench"
MT_BENCH_BASE_URL = "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data/mt_bench"
MT_BENCH_QUESTIONS_URL = f"{MT_BENCH_BASE_URL}/question.jsonl"
MT_BENCH_REFERENCES_URL = f"{MT_BENCH_BASE_URL}/reference_answer/gpt-4.jsonl"
MT_BENCH_REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
"""MT-Bench's NEED_REF_CATS: the categories judged against a reference answer"""

SAMPLE = "sample"
SAMPLE_PATH = Path(__file__).resolve().parent / "data" / "sample_questions.jsonl"
"""A small multilingual set shipped with the package, for smoke runs (`--questions sample`)"""


@dataclass(frozen=True)
class Question:
    question_id: str
    category: str
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None = None
    language: str = "en"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _cache_dir() -> Path:
    root = os.environ.get("WONTON_HF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "wonton_hf")
    return Path(root) / "mt_bench"


def _offline() -> bool:
    return any(
        os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"} for v in ("HF_HUB_OFFLINE", "WONTON_OFFLINE")
    )


def _download(url: str, path: Path) -> Path:
    """Fetch `url` once into `path` (written atomically, so an interrupted download is not mistaken for a file)."""
    if path.is_file():
        return path
    if _offline():
        raise ValueError(
            f"The MT-Bench questions are not cached ({path}) and HF_HUB_OFFLINE is set, so they cannot be fetched "
            f"from {url}: pass --questions FILE.jsonl (e.g. a copy of that file) or unset it."
        )
    from .backends import import_httpx

    httpx = import_httpx()

    logger.info("Downloading %s", url)
    try:
        response = httpx.get(url, timeout=60, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise ValueError(f"Cannot download the MT-Bench questions from {url}: {error}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(response.content)
    partial.replace(path)
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error.msg}).") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}.")
        records.append(record)
    return records


def _as_turns(value: Any, where: str, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) and t.strip() for t in value):
        raise ValueError(f"{where}: `{name}` must be a non-empty string or a list of non-empty strings.")
    return tuple(value)


def parse_question(record: dict[str, Any], where: str) -> Question:
    """One record of a question file (see the module docstring); `where` names it in errors."""
    qid = record.get("question_id", record.get("id"))
    if qid is None:
        raise ValueError(f"{where}: no `question_id` (or `id`).")
    for name in ("turns", "prompt", "question"):
        if name in record:
            turns = _as_turns(record[name], where, name)
            break
    else:
        raise ValueError(f"{where}: no `turns` (or `prompt` / `question`).")
    reference = record.get("reference")
    if reference in (None, [], ""):
        reference = None
    else:
        reference = _as_turns(reference, where, "reference")
        if len(reference) < len(turns):  # a reference for some turns only: judge those turns with it
            reference = reference + ("",) * (len(turns) - len(reference))
    known = {"question_id", "id", "turns", "prompt", "question", "reference", "category", "language"}
    return Question(
        question_id=str(qid),
        category=str(record.get("category") or "general"),
        turns=turns,
        reference=reference,
        language=str(record.get("language") or "en"),
        extra={k: v for k, v in record.items() if k not in known},
    )


def load_questions(source: str | os.PathLike = MT_BENCH, limit: int | None = None) -> tuple[list[Question], str]:
    """The questions of `source` (a JSONL path, `mt_bench` or `sample`) and a description of where they came from.

    Duplicate ids are refused: records, caches and the chat-minus-base pairing are keyed by question id.
    """
    source = str(source)
    if source == MT_BENCH:
        path = _download(MT_BENCH_QUESTIONS_URL, _cache_dir() / "question.jsonl")
        questions = _with_mt_bench_references(_parse_file(path))
        description = f"MT-Bench ({MT_BENCH_QUESTIONS_URL})"
    else:
        path = SAMPLE_PATH if source == SAMPLE else Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Question file {path} does not exist (give a JSONL file, `mt_bench` or `sample`).")
        questions = _parse_file(path)
        description = str(path) if source != SAMPLE else f"the package's sample set ({path.name})"
    if not questions:
        raise ValueError(f"{source}: no questions.")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"`limit` must be a positive number of questions, got {limit}.")
        questions = questions[:limit]
    return questions, description


def _parse_file(path: Path) -> list[Question]:
    questions = [parse_question(r, f"{path}, record {i + 1}") for i, r in enumerate(_read_jsonl(path))]
    seen: set[str] = set()
    for question in questions:
        if question.question_id in seen:
            raise ValueError(f"{path}: question_id {question.question_id} appears twice.")
        seen.add(question.question_id)
    return questions


def _with_mt_bench_references(questions: list[Question]) -> list[Question]:
    """MT-Bench's reference-guided grading: GPT-4's reference answers for math, reasoning and coding questions
    (FastChat's `reference_answer/gpt-4.jsonl`), replacing any shorter `reference` in the question file."""
    path = _download(MT_BENCH_REFERENCES_URL, _cache_dir() / "reference_gpt-4.jsonl")
    references = {}
    for record in _read_jsonl(path):
        choices = record.get("choices") or [{}]
        turns = choices[0].get("turns")
        if turns:
            references[str(record.get("question_id"))] = tuple(turns)
    out = []
    for q in questions:
        if q.category in MT_BENCH_REFERENCE_CATEGORIES and q.question_id in references:
            q = Question(q.question_id, q.category, q.turns, references[q.question_id], q.language, q.extra)
        out.append(q)
    return out


__all__ = ["MT_BENCH", "MT_BENCH_QUESTIONS_URL", "SAMPLE", "Question", "load_questions", "parse_question"]
