"""`evaluate_chat`: answers of base and chat models, judged 1-10, summarised as in the paper (section 4).

Order of work, so that everything a user can get wrong fails before anything expensive runs:
questions read -> models checked (paths, remote code, chat templates) -> judge checked (reachable, key,
model) -> answers generated (resumable) -> answers judged (cached, concurrent, retried) -> records, summary,
report and figure written. Outputs in `output_dir`:

- `answers/<label>.jsonl`   the models' answers, one record per question and turn
- `judge_cache.sqlite`      every judge reply, keyed by (judge, prompt): a re-run pays for nothing twice
- `judgments.jsonl`         one record per model, question and turn: rating or why there is none
- `summary.json`            means and 95% intervals overall, per category, language and turn; chat - base
- `report.md`, `chat_scores.png`
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import Judge, JudgeError, JudgmentCache, cache_key
from .generate import AnswerStore, GenerationSettings, ModelSpec, check_models, generate_answers
from .prompts import build_judge_prompt, parse_rating
from .questions import MT_BENCH, Question, load_questions
from .report import plot_scores, render_benchmarks, render_report, summarise

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LmEvalOptions:
    """Also score every model on one of the package's lm-eval suites (chat models with their chat template)."""

    suite: str = "english"
    data_dir: str | None = None
    """local dataset copies, as for `wonton-hf eval --data-dir`"""
    limit: int | None = None
    batch_size: int | str = "auto"


@dataclass
class ChatEvaluation:
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    output_dir: Path
    report_path: Path
    figure_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    """seconds spent generating and judging, and the counts behind answers/s and judgments/s"""
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """model label -> lm-eval results, when `lm_eval` was given"""


def evaluate_chat(
    models: list[ModelSpec],
    judge: Judge,
    *,
    output_dir: str | Path,
    questions: str | Path = MT_BENCH,
    limit: int | None = None,
    generation: GenerationSettings | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    lm_eval: LmEvalOptions | None = None,
) -> ChatEvaluation:
    """Generate, judge and report; see the module docstring. Re-running with the same `output_dir` resumes.

    With `lm_eval`, every model is also scored on that lm-eval suite (`lm_eval/<label>/`, chat models through
    their chat template) and the report shows base and chat side by side on those benchmarks too.
    """
    if not models:
        raise ValueError("Give at least one model (--chat and/or --base).")
    generation = generation or GenerationSettings()
    question_list, source = load_questions(questions, limit)
    _check_inputs(models, judge, lm_eval, trust_remote_code)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timings, stores = _generate_all(models, question_list, output_dir, generation, device, trust_remote_code)
    records = _judge_all(models, question_list, stores, judge, output_dir, timings)
    meta = {
        "questions": source,
        "n_questions": len(question_list),
        "n_turns": sum(len(q.turns) for q in question_list),
        "judge": judge.name,
        "judge_backend": judge.identity()["backend"],
        "generation": generation.__dict__,
    }
    summary = summarise(records, [{"label": m.label, "mode": m.mode, "path": m.path} for m in models])
    summary["meta"] = meta
    summary["timings"] = timings
    benchmarks = run_lm_eval(models, lm_eval, output_dir / "lm_eval", device, trust_remote_code) if lm_eval else {}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    figure = plot_scores(summary, output_dir / "chat_scores.png")
    report = output_dir / "report.md"
    text = render_report(summary, meta, figure.name if figure else None)
    if benchmarks:
        text += render_benchmarks(benchmarks, {m.label: m.mode for m in models})
    report.write_text(text, encoding="utf-8")
    return ChatEvaluation(records, summary, output_dir, report, figure, timings, benchmarks)


def _check_inputs(
    models: list[ModelSpec], judge: Judge, lm_eval: LmEvalOptions | None, trust_remote_code: bool
) -> None:
    """Everything that can be refused is refused here, before the first answer is generated."""
    check_models(models, trust_remote_code)
    if lm_eval is not None:
        from ..run import check_request

        for spec in models:
            check_request(
                spec.path,
                lm_eval.suite,
                limit=lm_eval.limit,
                data_dir=lm_eval.data_dir,
                trust_remote_code=trust_remote_code,
            )
    judge.check()  # an unreachable judge fails here, before any answer is generated


def _generate_all(
    models: list[ModelSpec],
    question_list: list,
    output_dir: Path,
    generation: GenerationSettings,
    device: str | None,
    trust_remote_code: bool,
) -> tuple[dict[str, float], dict[str, AnswerStore]]:
    """Each model's answers, reusing those already on disk (a re-run generates only what is missing)."""
    timings: dict[str, float] = {"answers_generated": 0, "generation_s": 0.0}
    stores = {}
    for spec in models:
        store = AnswerStore(output_dir / "answers" / f"{_safe(spec.label)}.jsonl", spec, generation.key(spec))
        start = time.perf_counter()
        made = generate_answers(spec, question_list, store, generation, device, trust_remote_code)
        timings["generation_s"] += time.perf_counter() - start
        timings["answers_generated"] += made
        logger.info("%s: %d answers generated, %d reused", spec.label, made, len(store.answers) - made)
        stores[spec.label] = store
    return timings, stores


def _judge_all(
    models: list[ModelSpec],
    question_list: list,
    stores: dict[str, AnswerStore],
    judge: Judge,
    output_dir: Path,
    timings: dict[str, float],
) -> list[dict]:
    """Every answer judged through the cache; `timings` gains the judge's calls and time."""
    cache = JudgmentCache(output_dir / "judge_cache.sqlite")
    calls_before = judge.calls
    start = time.perf_counter()
    try:
        records = judge_answers(models, question_list, stores, judge, cache)
    finally:
        cache.close()
    timings["judging_s"] = time.perf_counter() - start
    timings["judge_calls"] = judge.calls - calls_before
    timings["judgments"] = len(records)
    timings["judgments_new"] = sum(1 for r in records if not r["cached"] and r["status"] != "error")
    _write_jsonl(output_dir / "judgments.jsonl", records)
    return records


def run_lm_eval(
    models: list[ModelSpec], options: LmEvalOptions, output_dir: Path, device: str | None, trust_remote_code: bool
) -> dict[str, dict[str, Any]]:
    """`wonton-hf eval` on every model: base models plain, chat models with `apply_chat_template=True`."""
    from ..run import evaluate_checkpoint

    results = {}
    for spec in models:
        outputs = evaluate_checkpoint(
            spec.path,
            options.suite,
            output_dir=output_dir / _safe(spec.label),
            data_dir=options.data_dir,
            limit=options.limit,
            batch_size=options.batch_size,
            device=device,
            trust_remote_code=trust_remote_code,
            apply_chat_template=spec.mode == "chat",
        )
        results[spec.label] = outputs.results
    return results


def judge_answers(
    models: list[ModelSpec],
    questions: list[Question],
    stores: dict[str, AnswerStore],
    judge: Judge,
    cache: JudgmentCache,
) -> list[dict[str, Any]]:
    """One record per model, question and turn; cached replies are reused, the rest requested concurrently."""
    identity = judge.identity()
    jobs = []
    for spec in models:
        for question in questions:
            answers = stores[spec.label].conversation(question)
            if answers is None:
                raise RuntimeError(f"{spec.label}: answers to {question.question_id} are missing after generation")
            for turn in range(len(question.turns)):
                prompt = build_judge_prompt(question.turns, answers, turn, question.reference)
                jobs.append((spec, question, turn, prompt, cache_key(identity, prompt.messages)))

    with ThreadPoolExecutor(max_workers=max(1, judge.concurrency)) as pool:
        records = list(pool.map(lambda job: _judge_one(job, judge, cache, identity, stores), jobs))
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        logger.warning(
            "%d of %d judgments have no rating (%d unparsed, %d errors); see judgments.jsonl",
            len(failed),
            len(records),
            sum(r["status"] == "unparsed" for r in failed),
            sum(r["status"] == "error" for r in failed),
        )
    return records


def _judge_one(
    job: tuple, judge: Judge, cache: JudgmentCache, identity: dict[str, Any], stores: dict[str, AnswerStore]
) -> dict[str, Any]:
    """One judgment: from the cache, or asked and cached; a failed request is an `error` record, never a rating."""
    spec, question, turn, prompt, key = job
    record = {
        "model": spec.label,
        "mode": spec.mode,
        "question_id": question.question_id,
        "category": question.category,
        "language": question.language,
        "turn": turn + 1,
        "turn_label": f"turn {turn + 1}",
        "judge_prompt": prompt.name,
        "judge": judge.name,
        "answer": stores[spec.label].answers[(question.question_id, turn)],
        "cache_key": key,
    }
    reply = cache.get(key)
    record["cached"] = reply is not None
    if reply is None:
        try:
            reply = judge.complete(prompt.messages)
        except JudgeError as error:
            logger.warning("judge failed on %s %s turn %d: %s", spec.label, question.question_id, turn + 1, error)
            return {**record, "rating": None, "status": "error", "error": str(error), "judgment": None}
        cache.put(key, identity, prompt.messages, reply)
    rating = parse_rating(reply)
    return {**record, "rating": rating, "status": "ok" if rating is not None else "unparsed", "judgment": reply}


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


__all__ = ["ChatEvaluation", "LmEvalOptions", "evaluate_chat", "judge_answers", "run_lm_eval"]
