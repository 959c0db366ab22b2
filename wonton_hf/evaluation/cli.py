"""`wonton-hf eval` and `wonton-hf eval-report`: argument parsing only; the work is in `run.py` / `report.py`."""

from __future__ import annotations

import argparse

from .suites import SUITES


def _batch_size(text: str) -> int | str:
    if text == "auto" or text.startswith("auto:"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score a checkpoint on the paper's benchmarks with lm-eval and write a paper-style report",
        description="Run lm-eval (its Python API, model 'hf') on the paper's Belebele / XNLI / XStoryCloze / "
        "XWinograd languages and its six English tasks; write lm-eval's results.json, report.md (laid out like "
        "the paper's Tables 2-4, with its Wonton / Pythia / Mistral 7B rows) and belebele.png (Figure 4).",
    )
    parser.add_argument("model", help="a save_pretrained directory or a hub id")
    parser.add_argument("--suite", choices=list(SUITES), default="all", help="which tables to reproduce (default: all)")
    parser.add_argument(
        "--limit", type=int, default=None, help="at most N examples per task (a smoke test, not comparable)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="read local copies instead of the hub, laid out as DIR/<hub dataset name>/<config>/<split>.jsonl "
        "(or .parquet), e.g. DIR/belebele/eng_Latn/test.jsonl",
    )
    parser.add_argument("--output", default=None, help="output directory (default: eval-<model name>)")
    parser.add_argument("--batch-size", type=_batch_size, default="auto", help="'auto' (default) or an integer")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run modelling code shipped with the checkpoint (its `auto_map`); off by default, pass it only for a "
        "source you trust. Wonton checkpoints need none.",
    )
    parser.add_argument(
        "--apply-chat-template",
        action="store_true",
        help="wrap every prompt in the tokenizer's chat template (lm-eval's --apply_chat_template): how a chat "
        "model is asked; base models are scored without it, as in the paper's tables",
    )
    parser.set_defaults(func=_run_eval)

    report = subparsers.add_parser(
        "eval-report",
        help="lay out an lm-eval results JSON like the paper's Tables 2-4",
        description="Write report.md and belebele.png from a results JSON of `wonton-hf eval` or of "
        "`lm_eval --include_path eval_tasks --tasks wonton_all --output_path ...`.",
    )
    report.add_argument("results", help="the results JSON")
    report.add_argument("--output", required=True, help="directory for report.md and belebele.png")
    report.add_argument("--model-name", default=None, help="row label for our model (default: from the results)")
    report.set_defaults(func=_run_report)


def _run_eval(args: argparse.Namespace) -> int:
    from .run import evaluate_checkpoint, model_display_name

    output = args.output or f"eval-{model_display_name(args.model).replace('/', '--')}"
    outputs = evaluate_checkpoint(
        args.model,
        args.suite,
        output_dir=output,
        data_dir=args.data_dir,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        apply_chat_template=args.apply_chat_template,
    )
    print(
        f"Wrote {outputs.results_path}, {outputs.report_path}"
        + (f", {outputs.figure_path}" if outputs.figure_path else "")
    )
    print(outputs.report_path.read_text(encoding="utf-8"))
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from .report import write_report
    from .run import load_results, model_display_name

    results = load_results(args.results)
    name = args.model_name or model_display_name(_pretrained_from_model_args(results) or "our model")
    report_path, figure_path = write_report(results, args.output, name)
    print(f"Wrote {report_path}" + (f", {figure_path}" if figure_path else ""))
    return 0


def _pretrained_from_model_args(results: dict) -> str | None:
    """The evaluated checkpoint: lm-eval stores `config.model_args` as a dict (Python API) or a "k=v,k=v"
    string (CLI), and `config.model` as the model path when it was given a loaded model."""
    config = results.get("config", {})
    model_args = config.get("model_args")
    if isinstance(model_args, dict) and model_args.get("pretrained"):
        return str(model_args["pretrained"])
    if isinstance(model_args, str):
        for item in model_args.split(","):
            key, _, value = item.partition("=")
            if key.strip() == "pretrained":
                return value.strip()
    model = config.get("model")
    return model if isinstance(model, str) and model not in ("hf", "HFLM") else None
