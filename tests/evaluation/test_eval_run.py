"""A real lm-eval run on a tiny Wonton checkpoint, offline: Auto classes, trust_remote_code, the report."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wonton_hf.evaluation import cli
from wonton_hf.evaluation.report import TABLE_3, TABLE_4, metric_value, our_row
from wonton_hf.evaluation.run import evaluate_checkpoint
from wonton_hf.evaluation.suites import suite_tasks
from wonton_hf.remote_code import needs_remote_code, read_model_config


def _wonton_hf(argv: list[str]) -> int:
    """`wonton-hf ...` with only our subcommands, as wonton_hf.cli wires them."""
    parser = argparse.ArgumentParser(prog="wonton-hf")
    cli.add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def auto_class_run(tiny_checkpoint, offline_data_dir, tmp_path_factory) -> Path:
    """`wonton-hf eval CHECKPOINT --suite all --data-dir DIR --output OUT`, model loaded via the Auto classes."""
    output = tmp_path_factory.mktemp("eval_auto")
    argv = [
        "eval",
        str(tiny_checkpoint),
        "--suite",
        "all",
        "--data-dir",
        str(offline_data_dir),
        "--output",
        str(output),
    ]
    assert _wonton_hf(argv) == 0
    return output


def test_cli_eval_writes_results_report_and_figure(auto_class_run):
    results = json.loads((auto_class_run / "results.json").read_text(encoding="utf-8"))
    assert set(suite_tasks("all")) <= set(results["results"])
    assert results["config"]["model_args"]["trust_remote_code"] is False  # registered Auto classes suffice
    for task in suite_tasks("all"):
        assert results["n-samples"][task]["effective"] == 2
        assert metric_value(results, task, "perplexity" if task == "lambada_openai" else "acc") is not None
    # lm-eval's own group aggregate (plain mean, weight_by_size false) equals the paper-style average.
    assert results["results"]["wonton_belebele"]["acc,none"] == pytest.approx(our_row(TABLE_3, results)["avg"])
    xtasks = [metric_value(results, t, "acc") for t in suite_tasks("multilingual")[8:]]
    assert our_row(TABLE_4, results)["avg"] == pytest.approx(sum(xtasks) / 9)

    report = (auto_class_run / "report.md").read_text(encoding="utf-8")
    ours = [line for line in report.splitlines() if line.startswith("| **")]
    assert len(ours) == 3 and all("—" not in line for line in ours[1:])  # Tables 3 and 4 complete
    assert (auto_class_run / "belebele.png").stat().st_size > 10_000
    assert (auto_class_run / "lm_eval_tasks" / "belebele_eng_Latn.yaml").is_file()


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["wonton_hf"] = None  # wonton_hf is not importable here: only the checkpoint's own code
    try:
        import wonton_hf
        raise SystemExit("wonton_hf should not be importable")
    except ImportError:
        pass
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    checkpoint, tasks_dir, output = sys.argv[1:]
    lm = HFLM(pretrained=checkpoint, trust_remote_code=True, batch_size=64, device="cpu")
    assert type(lm.model).__module__.startswith("transformers_modules"), type(lm.model).__module__
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=["wonton_multilingual"],
        task_manager=TaskManager(include_defaults=False, include_path=tasks_dir),
        log_samples=False,
        bootstrap_iters=0,
    )
    with open(output, "w", encoding="utf-8") as handle:
        json.dump(results, handle, default=handle_non_serializable)
    """
)


def test_trust_remote_code_without_wonton_hf(auto_class_run, tiny_checkpoint, tmp_path):
    """Plain lm-eval, our include folder, the checkpoint's exported code: same numbers as the Auto classes."""
    results_path = tmp_path / "remote_results.json"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            REMOTE_CODE_SCRIPT,
            str(tiny_checkpoint),
            str(auto_class_run / "lm_eval_tasks"),
            str(results_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    remote = json.loads(results_path.read_text(encoding="utf-8"))
    auto = json.loads((auto_class_run / "results.json").read_text(encoding="utf-8"))
    for task in suite_tasks("multilingual"):
        assert metric_value(remote, task, "acc") == metric_value(auto, task, "acc"), task

    assert _wonton_hf(["eval-report", str(results_path), "--output", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert f"**{tiny_checkpoint.name}** (ours)" in report
    assert TABLE_3.title in report and TABLE_4.title in report and "Table 2" not in report
    assert (tmp_path / "report" / "belebele.png").is_file()


def test_user_errors_fail_before_any_work(tiny_checkpoint, offline_data_dir, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="Model directory ./no/such/dir does not exist"):
        evaluate_checkpoint("./no/such/dir", "all", output_dir=tmp_path, data_dir=offline_data_dir)
    with pytest.raises(ValueError, match="`limit` must be a positive"):
        evaluate_checkpoint(str(tiny_checkpoint), "all", output_dir=tmp_path, limit=0)
    with pytest.raises(ValueError, match="Unknown suite"):
        evaluate_checkpoint(str(tiny_checkpoint), "table5", output_dir=tmp_path)
    with monkeypatch.context() as patch:
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        with pytest.raises(ValueError, match="HF_DATASETS_OFFLINE is set.*pass --data-dir"):
            evaluate_checkpoint(str(tiny_checkpoint), "english", output_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_trust_remote_code_only_when_needed(tiny_checkpoint, tmp_path):
    assert needs_remote_code(read_model_config(str(tiny_checkpoint))) is False  # wonton is registered on import
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "config.json").write_text(
        json.dumps({"model_type": "somebody_elses_model", "auto_map": {"AutoConfig": "configuration_x.XConfig"}})
    )
    assert needs_remote_code(read_model_config(str(custom))) is True


def _needs_code(root):
    custom = root / "custom"
    custom.mkdir()
    (custom / "config.json").write_text(
        json.dumps(
            {
                "model_type": "somebody_elses_model",
                "auto_map": {
                    "AutoConfig": "configuration_x.XConfig",
                    "AutoModelForCausalLM": "modeling_x.XForCausalLM",
                },
            }
        )
    )
    (custom / "modeling_x.py").write_text("raise SystemExit('remote code ran')\n")
    return custom


def test_remote_code_only_with_explicit_consent(tmp_path, capsys):
    from wonton_hf.chat.interactive import load_chat_model
    from wonton_hf.remote_code import RemoteCodeRequired

    custom = _needs_code(tmp_path)
    with pytest.raises(RemoteCodeRequired, match=r"pass `--trust-remote-code` only if you trust its source"):
        evaluate_checkpoint(str(custom), "multilingual", output_dir=tmp_path / "out", data_dir=tmp_path)
    assert not (tmp_path / "out").exists()
    with pytest.raises(RemoteCodeRequired, match="modeling_x.py"):
        load_chat_model(str(custom))
    from wonton_hf.cli import main

    assert main(["eval", str(custom), "--data-dir", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "needs code shipped with it" in capsys.readouterr().err
