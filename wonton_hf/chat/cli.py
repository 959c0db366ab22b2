"""`wonton-hf chat MODEL_DIR`: argument parsing only; the session and the loop are in `interactive.py`."""

from __future__ import annotations

import argparse
import os
import sys


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="talk to a chat model in the terminal ([INST] template, streamed replies)",
        description="Interactive chat with a save_pretrained model directory: the tokenizer's chat template, "
        "streamed tokens, history; /reset clears it, /exit quits. Non-interactive: --prompt TEXT (or --prompt - "
        "to read the question from stdin) answers once; with stdin not a terminal every line is one user turn.",
    )
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="directory written by examples/sft.py (or any chat model)"
    )
    parser.add_argument("--prompt", help="answer this one question and exit ('-': read it from stdin)")
    parser.add_argument("--system", help="system prompt (placed inside the first [INST], Llama 2's <<SYS>> block)")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 decodes greedily (default 0.7)")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest reply in tokens (default 256)")
    parser.add_argument("--seed", type=int, help="sampling seed, for repeatable replies")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run modelling code shipped with the checkpoint (its `auto_map`); off by default, pass it "
        "only for a source you trust. Wonton checkpoints need none.",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .interactive import ChatSession, SamplingOptions, answer_once, chat_loop, load_chat_model

    sampling = SamplingOptions(args.temperature, args.top_p, args.max_new_tokens, args.seed)
    sampling.validate()  # before the model loads
    if not os.path.isdir(args.model_dir):
        raise FileNotFoundError(f"MODEL_DIR {args.model_dir} is not a directory (expected a save_pretrained output).")
    model, tokenizer = load_chat_model(args.model_dir, trust_remote_code=args.trust_remote_code)
    session = ChatSession(model, tokenizer, sampling, system=args.system)
    if args.prompt is not None:
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        return answer_once(session, prompt, sys.stdout)
    return chat_loop(session, sys.stdin, sys.stdout, interactive=sys.stdin.isatty())
