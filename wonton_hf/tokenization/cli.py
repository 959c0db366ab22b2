"""`wonton-hf tokenizer train|report|convert-spm`: argument parsing only; the work is in this package."""

from __future__ import annotations

import argparse
import logging


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenizer", help="train, compare or convert tokenizers (paper section 2.3)")
    actions = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    _add_train(actions)
    _add_report(actions)
    _add_convert(actions)


def _add_train(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "train",
        help="train a BPE tokenizer with the paper's rules",
        description="Train a byte-fallback BPE (single digits, space runs of 1..24 as tokens, \\n \\t \\r alone, "
        "no dummy prefix, lossless) and save it as a PreTrainedTokenizerFast directory.",
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="[NAME=]PATH",
        help="files or globs (.txt, .jsonl, .jsonl.gz, .jsonl.zst, .parquet); NAME groups them for --weight",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        # The default lives in trainer.py, which imports transformers: resolved in `_train`, so --help stays fast.
        help="rounded up to a multiple of 128 (default: the paper's 139,776, `trainer.DEFAULT_VOCAB_SIZE`)",
    )
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument(
        "--weight",
        nargs="+",
        default=None,
        metavar="NAME=W",
        help="share of training bytes per named input, e.g. en=1 zh=1 ja=1 (default: all text)",
    )
    parser.add_argument("--text-field", default="text", help="field of jsonl records holding the text")
    parser.add_argument("--max-token-length", type=int, default=None, help="longest learnt token in characters")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=_train)


def _add_report(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "report",
        help="compression, fertility, continued words and throughput per language",
        description="Compare tokenizers per language (bytes/token, chars/token, fertility, continued words, "
        "tokens/s); writes report.md, report.json and report.png (grouped bars, like the paper's Figure 3).",
    )
    parser.add_argument(
        "--tokenizer",
        nargs="+",
        required=True,
        metavar="NAME=PATH",
        help="a directory from `tokenizer train`, any tokenizer.json, or a SentencePiece .model",
    )
    parser.add_argument(
        "--corpus", required=True, help="directory with one jsonl(.gz) file per language (lo_en.jsonl.gz -> en)"
    )
    parser.add_argument("--output", required=True, help="directory to write the report to")
    parser.add_argument("--max-documents", type=int, default=None, help="read at most this many documents per language")
    parser.set_defaults(func=_report)


def _add_convert(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "convert-spm",
        help="convert the original SentencePiece tokenizer to a PreTrainedTokenizerFast",
        description="Convert a SentencePiece BPE model (e.g. nyonic-tokenizer-v1) to a PreTrainedTokenizerFast whose "
        "ids equal SentencePiece's encode.",
    )
    parser.add_argument("model", help="a SentencePiece .model file or a directory holding tokenizer.model")
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument(
        "--split-special-tokens",
        action="store_true",
        help='treat "<s>", "</s>", "<pad>", "<unk>" inside text as plain text, exactly like SentencePiece',
    )
    parser.set_defaults(func=_convert)


def _weights(specs: list[str] | None) -> dict[str, float] | None:
    if not specs:
        return None
    weights = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"--weight {spec!r}: expected NAME=NUMBER, e.g. en=0.5.")
    return weights


def _train(args: argparse.Namespace) -> int:
    from .trainer import DEFAULT_VOCAB_SIZE, BPETrainingConfig, train_tokenizer

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = BPETrainingConfig(
        vocab_size=args.vocab_size if args.vocab_size is not None else DEFAULT_VOCAB_SIZE,
        weights=_weights(args.weight),
        max_token_length=args.max_token_length,
        show_progress=not args.no_progress,
        text_field=args.text_field,
    )
    result = train_tokenizer(args.input, config, output_dir=args.output)
    print(f"Wrote {args.output}: {result.summary()}.")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import markdown_table, tokenizer_report

    rows = tokenizer_report(args.tokenizer, args.corpus, args.output, max_documents=args.max_documents)
    print(markdown_table(rows))
    print(f"Wrote {args.output}/report.md, report.json, report.png")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .sentencepiece import convert_sentencepiece

    tokenizer = convert_sentencepiece(args.model, args.output, split_special_tokens=args.split_special_tokens)
    print(
        f"Wrote {args.output} ({len(tokenizer):,} tokens). Load it with AutoTokenizer.from_pretrained({args.output!r})."
    )
    return 0
