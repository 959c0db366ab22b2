"""`wonton-hf eval-chat`: argument parsing only; the work is in `run.py`."""

from __future__ import annotations

import argparse
import os

from ..suites import SUITES


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-chat",
        help="rate base and chat models' answers 1-10 with an LLM judge (MT-Bench), chat minus base as in the paper",
        description="Generate answers of base models (plain Question:/Answer: prompts) and chat models (their chat "
        "template) to a question set (MT-Bench's 80 two-turn questions by default), have a judge rate each answer "
        "1-10 with MT-Bench's single-answer grading prompts, and write judgments.jsonl, summary.json, report.md "
        "(means with 95%% intervals per category, language and turn; chat minus base) and chat_scores.png. "
        "Re-running with the same --output resumes: answers and judgments already made are reused.",
    )
    parser.add_argument(
        "--chat", action="append", default=[], metavar="[LABEL=]MODEL", help="a chat model (repeatable)"
    )
    parser.add_argument(
        "--base",
        action="append",
        default=[],
        metavar="[LABEL=]MODEL",
        help="a base model (repeatable); chat models are compared with the first",
    )
    parser.add_argument(
        "--questions",
        default="mt_bench",
        help="'mt_bench' (default: fetched from FastChat's repository and cached), 'sample' (a small multilingual "
        "set shipped with the package) or a JSONL file of {question_id, category, turns, [reference], [language]}",
    )
    parser.add_argument("--limit", type=_positive, default=None, help="only the first N questions (a smoke test)")
    parser.add_argument("--output", default="eval-chat", help="output directory (default: eval-chat)")
    _add_judge_arguments(parser)
    _add_answer_arguments(parser)
    parser.set_defaults(func=_run)


def _add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    judge = parser.add_argument_group("judge (an OpenAI-compatible endpoint, or --judge-local)")
    judge.add_argument(
        "--judge-url",
        default=os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
        help="base URL of a chat-completions API (default: $OPENAI_BASE_URL or OpenAI's)",
    )
    judge.add_argument("--judge-model", default="gpt-4", help="judge model name (default: gpt-4, MT-Bench's judge)")
    judge.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    judge.add_argument("--judge-local", metavar="MODEL", help="judge with a local transformers model instead of HTTP")
    judge.add_argument("--judge-concurrency", type=_positive, default=8, help="judge requests in flight (default 8)")
    judge.add_argument("--judge-timeout", type=float, default=120.0, help="seconds per judge request (default 120)")
    judge.add_argument("--judge-retries", type=int, default=6, help="retries on 429/5xx/timeouts (default 6)")
    judge.add_argument("--judge-max-tokens", type=_positive, default=2048, help="judge reply length (default 2048)")


def _add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    gen = parser.add_argument_group("answers")
    gen.add_argument("--max-new-tokens", type=_positive, default=512, help="longest answer in tokens (default 512)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 (default) decodes greedily")
    gen.add_argument("--batch-size", type=_positive, default=8, help="questions generated together (default 8)")
    gen.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    gen.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run modelling code shipped with a checkpoint (its `auto_map`); only for sources you trust",
    )
    bench = parser.add_argument_group("lm-eval benchmarks (optional): the same models, side by side")
    bench.add_argument(
        "--lm-eval-suite",
        choices=list(SUITES),
        default=None,
        help="also score every model on this suite of `wonton-hf eval` (chat models with --apply-chat-template)",
    )
    bench.add_argument("--lm-eval-data-dir", default=None, help="local dataset copies, as `wonton-hf eval --data-dir`")
    bench.add_argument("--lm-eval-limit", type=_positive, default=None, help="at most N examples per task")


def _run(args: argparse.Namespace) -> int:
    from .backends import OpenAICompatibleJudge, TransformersJudge
    from .generate import GenerationSettings, ModelSpec
    from .run import LmEvalOptions, evaluate_chat

    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    models = [ModelSpec.parse(m, "base") for m in args.base] + [ModelSpec.parse(m, "chat") for m in args.chat]
    if args.judge_local:
        judge = TransformersJudge(args.judge_local, device=args.device, trust_remote_code=args.trust_remote_code)
    else:
        judge = OpenAICompatibleJudge(
            args.judge_url,
            args.judge_model,
            api_key_env=args.judge_api_key_env,
            timeout=args.judge_timeout,
            max_retries=args.judge_retries,
            max_tokens=args.judge_max_tokens,
            concurrency=args.judge_concurrency,
        )
    result = evaluate_chat(
        models,
        judge,
        output_dir=args.output,
        questions=args.questions,
        limit=args.limit,
        generation=GenerationSettings(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=args.batch_size
        ),
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        lm_eval=LmEvalOptions(args.lm_eval_suite, args.lm_eval_data_dir, args.lm_eval_limit)
        if args.lm_eval_suite
        else None,
    )
    t = result.timings
    print(result.report_path.read_text(encoding="utf-8"))
    print(
        f"Generated {int(t['answers_generated'])} answers in {t['generation_s']:.1f} s; "
        f"{int(t['judgments'])} judgments ({int(t['judge_calls'])} judge calls) in {t['judging_s']:.1f} s."
    )
    print(f"Wrote {result.output_dir}/judgments.jsonl, summary.json, {result.report_path.name}, chat_scores.png")
    return 0
