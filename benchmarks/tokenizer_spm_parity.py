"""Claim: the converted original tokenizer (`wonton-hf tokenizer convert-spm`) gives the same ids as
SentencePiece's `encode` on every document of the eight corpus languages and on adversarial strings,
and its decode equals SentencePiece's decode. Baseline: SentencePiece itself, in the same process.

    python benchmarks/tokenizer_spm_parity.py [--model ../shared/reference/nyonic-tokenizer-v1/tokenizer.model]
                                              [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import sentencepiece as spm

from wonton_hf.tokenization.sentencepiece import convert_sentencepiece

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.tokenization.fixtures import LANGUAGES, shared_documents  # noqa: E402
from tests.tokenization.test_sentencepiece import adversarial_strings  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


def compare(sp: spm.SentencePieceProcessor, tokenizer, texts: list[str]) -> dict[str, float]:
    """Id and decode agreement for one batch of texts, in both special-token modes, and encode speeds."""
    backend = tokenizer.backend_tokenizer
    start = time.perf_counter()
    expected = sp.encode(texts, num_threads=os.cpu_count())
    sp_time = time.perf_counter() - start
    backend.encode_special_tokens = False  # the default: "<s>" in text is the bos token (HF convention)
    start = time.perf_counter()
    default = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    our_time = time.perf_counter() - start
    backend.encode_special_tokens = True  # split_special_tokens=True: SentencePiece's behaviour
    split = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    backend.encode_special_tokens = False
    return {
        "texts": len(texts),
        "ids_default": sum(a == b for a, b in zip(expected, default, strict=True)),
        "ids_split": sum(a == b for a, b in zip(expected, split, strict=True)),
        "decode": sum(tokenizer.decode(ids) == sp.decode(ids) for ids in expected),
        "tokens": sum(map(len, expected)),
        "sp_time": sp_time,
        "our_time": our_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(SHARED / "reference" / "nyonic-tokenizer-v1" / "tokenizer.model"))
    parser.add_argument("--corpus", default=str(SHARED / "corpus"))
    args = parser.parse_args()
    start = time.perf_counter()
    tokenizer = convert_sentencepiece(args.model)
    print(f"converted {args.model} in {time.perf_counter() - start:.1f} s: {len(tokenizer):,} tokens")
    sp = spm.SentencePieceProcessor(model_file=args.model)
    documents = shared_documents() if Path(args.corpus).is_dir() else {}
    documents["adversarial"] = adversarial_strings(seed=0, random_count=5000)
    print(
        "| set | texts | ids equal (default) | ids equal (split_special_tokens) | decode equal | tokens "
        "| SP encode M tok/s | ours M tok/s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    totals: dict[str, float] = {}
    for name, texts in documents.items():
        r = compare(sp, tokenizer, texts)
        print(
            f"| {name} | {r['texts']:,} | {r['ids_default']:,} | {r['ids_split']:,} | {r['decode']:,} | {r['tokens']:,} "
            f"| {r['tokens'] / r['sp_time'] / 1e6:.2f} | {r['tokens'] / r['our_time'] / 1e6:.2f} |"
        )
        for key in ("texts", "ids_default", "ids_split", "decode", "tokens"):
            totals[key] = totals.get(key, 0) + r[key]
    t = {k: int(v) for k, v in totals.items()}
    print(
        f"| all | {t['texts']:,} | {t['ids_default']:,} | {t['ids_split']:,} | {t['decode']:,} | {t['tokens']:,} | | |"
    )
    languages = [lang for lang in LANGUAGES if lang in documents]
    print(f"languages: {', '.join(languages)}")
    print(
        f"mismatching texts: {t['texts'] - t['ids_split']} ids with split_special_tokens=True (SentencePiece's "
        f"behaviour), {t['texts'] - t['ids_default']} with the default (literal '<s>' etc. in text), "
        f"{t['texts'] - t['decode']} decodes"
    )


if __name__ == "__main__":
    main()
