"""`evaluate_chat` / `wonton-hf eval-chat` end to end: tiny base and chat models, the test judge on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wonton_hf.cli import main
from wonton_hf.evaluation.judge.backends import JudgeUnavailable, OpenAICompatibleJudge, TransformersJudge
from wonton_hf.evaluation.judge.generate import GenerationSettings, ModelSpec
from wonton_hf.evaluation.judge.run import evaluate_chat

from .server import MODEL, JudgeServer, prompt_digest

REPO = Path(__file__).resolve().parents[2]
FAST = GenerationSettings(max_new_tokens=12, batch_size=8)


def _judge(server: JudgeServer, **kwargs) -> OpenAICompatibleJudge:
    options = {"timeout": 0.4, "backoff": 0.01, "max_backoff": 0.05, "concurrency": 4, **kwargs}
    return OpenAICompatibleJudge(server.url, MODEL, api_key="test", **options)


def _models(tiny_models) -> list[ModelSpec]:
    return [ModelSpec("base", str(tiny_models["base"]), "base"), ModelSpec("chat", str(tiny_models["chat"]), "chat")]


def test_end_to_end_with_faults_then_rerun_pays_nothing(tiny_models, judge_server, tmp_path):
    judge = _judge(judge_server)
    start = time.perf_counter()
    result = evaluate_chat(_models(tiny_models), judge, output_dir=tmp_path, questions="sample", generation=FAST)
    wall = time.perf_counter() - start
    t = result.timings
    records = result.records
    assert len(records) == 2 * 13  # two models x the sample set's 13 turns
    print(
        f"\nend-to-end: {wall:.1f} s wall; {t['answers_generated']:.0f} answers in {t['generation_s']:.1f} s "
        f"({t['answers_generated'] / t['generation_s']:.2f} answers/s); {t['judgments']:.0f} judgments in "
        f"{t['judging_s']:.2f} s ({t['judgments'] / t['judging_s']:.1f} judgments/s, {t['judge_calls']:.0f} calls)"
    )

    # Every fault kind happened and was retried through; each prompt was rated once it got through.
    faults = [r["fault"] for r in judge_server.requests if r["fault"]]
    assert {"429", "500", "slow"} <= set(faults)
    # One successful request per distinct judge prompt (two judgments can share one when untrained models give
    # the same answer; the second then comes from the cache or rides the same retry), plus the faulted ones.
    distinct = {r["cache_key"] for r in records}
    assert {r["digest"] for r in judge_server.requests} == {
        r["digest"] for r in judge_server.requests if not r["fault"]
    }
    assert len({r["digest"] for r in judge_server.requests}) == len(distinct)
    assert t["judge_calls"] == judge_server.completions() <= len(records) + len(faults)
    assert judge_server.completions() >= len(distinct) + len(faults)

    # Ratings are the judge's (recomputed from its rule); the German reasoning question gets no readable rating:
    # counted as unparsed for both models, in the means of neither.
    unparsed = [r for r in records if r["status"] == "unparsed"]
    assert {(r["model"], r["question_id"]) for r in unparsed} == {
        ("base", "de-reasoning-1"),
        ("chat", "de-reasoning-1"),
    }
    assert not [r for r in records if r["status"] == "error"]
    for r in records:
        if r["status"] == "ok":
            assert r["rating"] == 1 + len(r["answer"]) % 10
    assert {r["judge_prompt"] for r in records} == {
        "single-v1",
        "single-math-v1",
        "single-v1-multi-turn",
        "single-math-v1-multi-turn",
    }

    summary = result.summary
    for label in ("base", "chat"):
        rated = [r["rating"] for r in records if r["model"] == label and r["status"] == "ok"]
        overall = summary["overall"][label]
        assert overall["mean"] == pytest.approx(sum(rated) / len(rated))
        assert overall["n"] == 12 and overall["unparsed"] == 1 and overall["errors"] == 0
        assert overall["ci95"][0] <= overall["mean"] <= overall["ci95"][1]
    diff = summary["differences"][0]
    assert (diff["model"], diff["base"]) == ("chat", "base")
    assert diff["overall"]["mean"] == pytest.approx(
        summary["overall"]["chat"]["mean"] - summary["overall"]["base"]["mean"]
    )
    assert set(summary["per_language"]) == {"de", "en", "es", "fr", "it", "ja", "ko", "zh"}
    assert summary["per_language"]["de"]["chat"]["unparsed"] == 1

    report = result.report_path.read_text(encoding="utf-8")
    assert "Chat minus base (the paper reports +2.6)" in report and "| chat − base |" in report
    assert "## Per language" in report and "## Per category" in report and "chat_scores.png" in report
    assert result.figure_path.stat().st_size > 10_000
    lines = (tmp_path / "judgments.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 26 and json.loads(lines[0])["judgment"]

    # A second run: every answer and every judgment (unparsed ones too: the judge's verdict) comes from disk.
    before = judge_server.completions()
    again = evaluate_chat(
        _models(tiny_models), _judge(judge_server), output_dir=tmp_path, questions="sample", generation=FAST
    )
    assert judge_server.completions() == before and again.timings["judge_calls"] == 0
    assert again.timings["answers_generated"] == 0
    assert [r["rating"] for r in again.records] == [r["rating"] for r in records]


def test_judge_errors_are_counted_then_retried_by_the_next_run(tiny_models, tmp_path):
    broken = {"on": True}
    failing: set[str] = set()

    def always_500_for_some(digest: str, attempt: int) -> str | None:
        """The first two judgments asked fail on every attempt: two errors, whatever the untrained models answer
        (a rule on the digest alone could pick none of them; their answers vary with float rounding)."""
        if not broken["on"]:
            return None
        if digest not in failing and len(failing) < 2:
            failing.add(digest)
        return "500" if digest in failing else None

    server = JudgeServer(fault=always_500_for_some).start()
    try:
        models = _models(tiny_models)[1:]
        first = evaluate_chat(
            models, _judge(server, max_retries=2), output_dir=tmp_path, questions="sample", limit=4, generation=FAST
        )
        errors = [r for r in first.records if r["status"] == "error"]
        assert len(errors) == 2 and "gave up after 3 attempts; last: HTTP 500" in errors[0]["error"]
        assert first.summary["overall"]["chat"]["errors"] == len(errors)
        assert "| chat | chat |" in first.report_path.read_text(encoding="utf-8")
        broken["on"] = False  # the judge recovers: only the failed judgments are requested again
        calls = server.completions()
        second = evaluate_chat(
            models, _judge(server), output_dir=tmp_path, questions="sample", limit=4, generation=FAST
        )
        assert server.completions() - calls == len(errors)
        assert not [r for r in second.records if r["status"] == "error"]
    finally:
        server.stop()


def test_bad_input_fails_before_any_work(tiny_models, judge_server, tmp_path, capsys):
    # An unreachable judge: one clear message, nothing generated.
    dead = OpenAICompatibleJudge("http://127.0.0.1:9/v1", MODEL, timeout=1.0)
    with pytest.raises(JudgeUnavailable, match="unreachable.*nothing was generated"):
        evaluate_chat(_models(tiny_models), dead, output_dir=tmp_path / "dead", questions="sample")
    assert not (tmp_path / "dead").exists()
    # A rejected key, an unknown judge model.
    keyed = JudgeServer(api_key="right").start()
    try:
        with pytest.raises(JudgeUnavailable, match="rejected the API key"):
            OpenAICompatibleJudge(keyed.url, MODEL, api_key="wrong").check()
    finally:
        keyed.stop()
    with pytest.raises(JudgeUnavailable, match="does not serve model 'gpt-9'"):
        OpenAICompatibleJudge(judge_server.url, "gpt-9").check()

    common = ["--judge-url", judge_server.url, "--judge-model", MODEL, "--output", str(tmp_path / "o")]
    # The base checkpoint given as a chat model: its tokenizer has no chat template.
    assert main(["eval-chat", "--chat", str(tiny_models["base"]), "--questions", "sample", *common]) == 2
    assert "has no chat template" in capsys.readouterr().err
    assert (
        main(["eval-chat", "--chat", str(tiny_models["chat"]), "--questions", str(tmp_path / "none.jsonl"), *common])
        == 2
    )
    assert "none.jsonl does not exist" in capsys.readouterr().err
    assert main(["eval-chat", "--questions", "sample", *common]) == 2
    assert "at least one model" in capsys.readouterr().err
    assert main(["eval-chat", "--chat", str(tmp_path / "nope"), "--questions", "sample", *common]) == 2
    assert "does not exist" in capsys.readouterr().err
    main(["eval-chat", "--chat", str(tiny_models["chat"]), "--questions", "sample", *common[:-2], "--output", str(tmp_path / "d"),
          "--judge-url", "http://127.0.0.1:9/v1"])  # fmt: skip
    assert "unreachable" in capsys.readouterr().err
    assert judge_server.completions() == 0 and not (tmp_path / "o").exists()


def test_cli(tiny_models, judge_server, tmp_path, capsys):
    code = main(
        [
            "eval-chat",
            "--base", f"wonton-base={tiny_models['base']}",
            "--chat", f"wonton-chat={tiny_models['chat']}",
            "--questions", "sample", "--limit", "3", "--max-new-tokens", "8",
            "--judge-url", judge_server.url, "--judge-model", MODEL, "--judge-concurrency", "2",
            "--judge-timeout", "5", "--output", str(tmp_path),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "| wonton-chat − wonton-base |" in out and "judge calls" in out
    assert (tmp_path / "answers" / "wonton-base.jsonl").is_file() and (tmp_path / "chat_scores.png").is_file()


def test_local_transformers_judge(tiny_models, tmp_path):
    """The local judge path with a tiny (untrained) model: its replies hold no rating, and every one of them is
    counted as unparsed, none dropped or given a default score. Cached like any judge."""
    judge = TransformersJudge(str(tiny_models["chat"]), max_new_tokens=6)
    models = [ModelSpec("chat", str(tiny_models["chat"]), "chat")]
    result = evaluate_chat(models, judge, output_dir=tmp_path, questions="sample", limit=2, generation=FAST)
    n = len(result.records)
    assert n == 4 and judge.calls == n
    assert all(r["status"] == "unparsed" and r["rating"] is None and r["judgment"] is not None for r in result.records)
    overall = result.summary["overall"]["chat"]
    assert overall["mean"] is None and overall["unparsed"] == n
    assert f"| chat | chat | — | — | 0 | {n} | 0 |" in result.report_path.read_text(encoding="utf-8")
    again = TransformersJudge(str(tiny_models["chat"]), max_new_tokens=6)
    evaluate_chat(models, again, output_dir=tmp_path, questions="sample", limit=2, generation=FAST)
    assert again.calls == 0
    with pytest.raises(JudgeUnavailable, match="does not exist"):
        TransformersJudge(str(tmp_path / "missing")).check()


def test_resume_after_a_killed_run_rejudges_nothing(tiny_models, tmp_path):
    """Kill -9 a CLI run while it is judging; the next run requests exactly the prompts not in the cache."""
    server = JudgeServer(fault=lambda digest, attempt: None, delay=0.3).start()
    out = tmp_path / "run"
    args = [
        sys.executable, "-m", "wonton_hf.cli", "eval-chat",
        "--base", str(tiny_models["base"]), "--chat", str(tiny_models["chat"]),
        "--questions", "sample", "--limit", "5", "--max-new-tokens", "8",
        "--judge-url", server.url, "--judge-model", MODEL, "--judge-concurrency", "2", "--output", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while server.completions() < 6 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        with sqlite3.connect(out / "judge_cache.sqlite") as db:
            cached = {prompt_digest(json.loads(m)) for (m,) in db.execute("SELECT messages FROM judgments")}
        first = {r["digest"] for r in server.requests}
        total = 2 * 8  # 5 questions, 8 turns, 2 models
        # Killed mid-way: at most the 2 requests in flight (--judge-concurrency 2) were answered but not stored.
        assert 4 <= len(first) - 2 <= len(cached) <= len(first) < total and cached <= first

        server.delay = 0.0
        calls = server.completions()
        judge = _judge(server, timeout=5)
        result = evaluate_chat(
            _models(tiny_models), judge, output_dir=out, questions="sample", limit=5,
            generation=GenerationSettings(max_new_tokens=8),
        )  # fmt: skip
        second = [r["digest"] for r in server.requests[calls:]]
        print(
            f"\nresume: killed after {len(first)} judge requests ({len(cached)} judgments cached); "
            f"the resumed run made {len(second)} judge calls for {total} judgments, "
            f"{result.timings['answers_generated']:.0f} answers generated"
        )
        assert not set(second) & cached  # nothing already judged is judged again
        with sqlite3.connect(out / "judge_cache.sqlite") as db:
            judged = {prompt_digest(json.loads(m)) for (m,) in db.execute("SELECT messages FROM judgments")}
        # Exactly the prompts the cache lacked, once each (16 judgments; two share a prompt when the untrained
        # models answer alike, so the count of distinct prompts is read from the cache, not assumed).
        assert len(second) == len(set(second)) == judge.calls and set(second) == judged - cached
        assert total - 2 <= len(judged) <= total
        assert result.timings["answers_generated"] == 0  # answers were all written before judging began
        assert len(result.records) == total
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()


def test_lm_eval_suites_side_by_side(tiny_models, judge_server, tmp_path, monkeypatch):
    """Chat models through lm-eval with their chat template (base models without), one report with both."""
    pytest.importorskip("lm_eval", reason="the lm-eval side needs the `eval` extra")
    from lm_eval.models.huggingface import HFLM

    from wonton_hf.evaluation.judge.run import LmEvalOptions
    from wonton_hf.evaluation.run import check_chat_template

    from ..evaluation.fixtures import write_offline_data

    rendered: list[str] = []
    original = HFLM.apply_chat_template

    def spy(self, chat_history, *args, **kwargs):
        rendered.append(original(self, chat_history, *args, **kwargs))
        return rendered[-1]

    monkeypatch.setattr(HFLM, "apply_chat_template", spy)
    data = write_offline_data(tmp_path / "data")
    with pytest.raises(ValueError, match="has no chat template"):
        check_chat_template(str(tiny_models["base"]))
    result = evaluate_chat(
        _models(tiny_models),
        _judge(judge_server),
        output_dir=tmp_path / "out",
        questions="sample",
        limit=1,
        generation=FAST,
        lm_eval=LmEvalOptions("english", str(data), limit=2, batch_size=2),
    )
    assert set(result.benchmarks) == {"base", "chat"}
    assert result.benchmarks["chat"]["config"]["apply_chat_template"] is True
    assert result.benchmarks["base"]["config"]["apply_chat_template"] is False
    # Only the chat model's prompts went through the template: the Wonton [INST] format.
    assert rendered and all(text.startswith("<s> [INST] ") and text.endswith(" [/INST]") for text in rendered)
    report = result.report_path.read_text(encoding="utf-8")
    assert "## Benchmarks (lm-eval), base and chat side by side" in report
    assert "| base | base |" in report and "| chat | chat |" in report
