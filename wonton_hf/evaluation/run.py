"""Score a checkpoint on one of the paper's suites with lm-eval's Python API, then write the report.

No harness of our own: `lm_eval.simple_evaluate` with its `hf` model does the loading, batching and
scoring. We only prepare its include path (groups, offline redirection), refuse checkpoints that need their
own code unless the user consented (`--trust-remote-code`, see `wonton_hf.remote_code`), and save the
results beside a paper-style report.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..remote_code import check_remote_code
from .report import write_report
from .suites import prepare_task_folder, suite_group, task_manager_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationOutputs:
    results: dict[str, Any]
    """lm-eval's results dict, as returned by `simple_evaluate`"""
    results_path: Path
    report_path: Path
    figure_path: Path | None
    tasks_dir: Path
    """the include path written for lm-eval, reusable with its CLI"""


def _hub_disabled() -> str | None:
    """The environment variable that switches hub downloads off, if any (as datasets reads them)."""
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(name, "").upper() in {"1", "ON", "YES", "TRUE"}:
            return name
    return None


def _is_local_path(model: str) -> bool:
    return Path(model).expanduser().exists() or model.startswith(("/", "./", "../", "~"))


def model_display_name(model: str) -> str:
    """A short name for the report: a local directory's name, or the hub id."""
    return Path(model).expanduser().resolve().name if Path(model).expanduser().exists() else model


def resolve_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_checkpoint(
    model: str,
    suite: str = "all",
    *,
    output_dir: str | Path,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    batch_size: int | str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    bootstrap_iters: int = 100_000,
    apply_chat_template: bool = False,
) -> EvaluationOutputs:
    """Run lm-eval on `model` (local directory or hub id) and write results.json, report.md, belebele.png.

    A checkpoint that needs its own code is refused unless `trust_remote_code=True` (the user's explicit
    consent: running it executes that code). Everything a user can get wrong (suite, limit, paths, offline
    files, remote code, a chat template asked of a tokenizer without one) is checked before the model is loaded.

    `apply_chat_template`: lm-eval's `--apply_chat_template`. Each prompt is wrapped in the tokenizer's chat
    template (`<s> [INST] prompt [/INST]` for Wonton chat models) and the answer choices scored as the model's
    reply: how a chat model is asked. Base models are scored without it, as in the paper's tables.
    """
    group = check_request(model, suite, limit=limit, data_dir=data_dir, trust_remote_code=trust_remote_code)
    if apply_chat_template:
        check_chat_template(model, trust_remote_code)
    output_dir = Path(output_dir)
    tasks_dir = prepare_task_folder(output_dir / "lm_eval_tasks", suite, data_dir)
    results = _simple_evaluate(
        model,
        group,
        tasks_dir,
        offline=data_dir is not None,
        limit=limit,
        batch_size=batch_size,
        device=resolve_device(device),
        trust_remote_code=trust_remote_code,
        bootstrap_iters=bootstrap_iters,
        apply_chat_template=apply_chat_template,
    )
    results_path = output_dir / "results.json"
    save_results(results, results_path)
    report_path, figure_path = write_report(results, output_dir, model_display_name(model))
    logger.info("Wrote %s, %s", results_path, report_path)
    return EvaluationOutputs(results, results_path, report_path, figure_path, tasks_dir)


def check_request(
    model: str, suite: str, *, limit: int | None, data_dir: str | Path | None, trust_remote_code: bool
) -> str:
    """Everything about a request that can fail before the datasets and the model load; returns the suite's
    lm-eval group."""
    group = suite_group(suite)
    if limit is not None and limit < 1:
        raise ValueError(f"`limit` must be a positive number of examples per task, got {limit}.")
    if data_dir is None and (variable := _hub_disabled()):
        raise ValueError(
            f"{variable} is set, so the datasets cannot be downloaded: pass --data-dir with local copies "
            "(DIR/<hub dataset name>/<config>/<split>.jsonl) or unset it."
        )
    if _is_local_path(model) and not Path(model).expanduser().is_dir():
        raise FileNotFoundError(
            f"Model directory {model} does not exist (give a save_pretrained directory or a hub id)."
        )
    # A wrong path or hub id, or code run without consent, fails here, not after the datasets are loaded.
    check_remote_code(model, trust_remote_code, flag="--trust-remote-code")
    return group


def check_chat_template(model: str, trust_remote_code: bool = False) -> None:
    """A clear error, before lm-eval loads anything, for a tokenizer without a chat template (a base model):
    lm-eval would otherwise fail deep inside its first request, or fall back to a generic template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    if not tokenizer.chat_template:
        raise ValueError(
            f"--apply-chat-template: the tokenizer of {model} has no chat template (a base model?). Evaluate it "
            "without the flag, or give it the Wonton [INST] template (wonton_hf.chat.install_chat_template)."
        )


def _simple_evaluate(
    model: str,
    group: str,
    tasks_dir: Path,
    *,
    offline: bool,
    limit: int | None,
    batch_size: int | str,
    device: str,
    trust_remote_code: bool,
    bootstrap_iters: int,
    apply_chat_template: bool = False,
) -> dict[str, Any]:
    import lm_eval

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": model, "trust_remote_code": trust_remote_code, "dtype": "auto"},
        tasks=[group],
        task_manager=task_manager_for(tasks_dir, offline=offline),
        batch_size=batch_size,
        device=device,
        limit=limit,
        log_samples=False,
        bootstrap_iters=bootstrap_iters,
        apply_chat_template=apply_chat_template,
    )
    if results is None:  # only on non-zero ranks of a multi-process run
        raise RuntimeError("lm-eval returned no results on this process (run the evaluation on rank 0).")
    results = dict(results)
    # lm-eval's results do not say whether prompts went through the chat template; reports need to know.
    results.setdefault("config", {})["apply_chat_template"] = apply_chat_template
    return results


def save_results(results: dict[str, Any], path: str | Path) -> Path:
    """lm-eval's results as JSON, serialised the way its own CLI does."""
    from lm_eval.utils import handle_non_serializable

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False), encoding="utf-8"
    )
    return path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results JSON written by us or by `lm_eval --output_path` (the same schema)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Results file {path} does not exist.")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON ({error.msg} at line {error.lineno}).") from None
    if not isinstance(results, dict) or "results" not in results:
        raise ValueError(f"{path} is not an lm-eval results file: it has no top-level 'results' key.")
    return results
