"""Per-language tokenizer report: compression, fertility, continued words, throughput (the paper's Figure 3).

Definitions (the report's, and Rust et al. 2021 for fertility and continued words):
- bytes per token: UTF-8 bytes of the text / tokens (the compression rate; higher is better);
- characters per token: Unicode code points / tokens;
- fertility: tokens per whitespace-delimited word, counting the tokens that start inside the word plus one
  that runs into it from the left (" word" starts at the space); only for space-delimited languages;
- continued words: share of words cut into 2 or more such tokens;
- throughput: tokens per second of one batched encode call over the whole language file.
Fertility and continued words are left empty for languages written without spaces between words
(`UNSPACED_LANGUAGES`: Chinese, Japanese, Thai...), as in the paper: a whitespace "word" there is a clause or
a markup fragment. For other language names the text decides: whitespace "words" averaging more than
`MAX_WORD_CHARS` characters mean an unspaced script.
"""

from __future__ import annotations

import bisect
import gzip
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_WORD_CHARS = 12.0
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu", "zh-hans", "zh-hant"})
_WORD = re.compile(r"\S+")
_CORPUS_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json", ".txt")


class TokenizerUnderTest:
    """One named tokenizer: `encode` for throughput, `spans` (character offsets of tokens) for word statistics."""

    def __init__(self, name: str, path: str | os.PathLike) -> None:
        self.name, self.path = name, Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"tokenizer {name!r}: {self.path} does not exist.")
        self._sp = None
        self._hf = None
        if self.path.suffix == ".model" or (
            self.path.is_dir()
            and not (self.path / "tokenizer.json").exists()
            and (self.path / "tokenizer.model").exists()
        ):
            import sentencepiece as spm

            model = self.path / "tokenizer.model" if self.path.is_dir() else self.path
            self._sp = spm.SentencePieceProcessor(model_file=str(model))
        else:
            from tokenizers import Tokenizer

            file = self.path / "tokenizer.json" if self.path.is_dir() else self.path
            if not file.is_file():
                raise FileNotFoundError(
                    f"tokenizer {name!r}: {self.path} has no tokenizer.json or tokenizer.model; give a directory "
                    "written by `wonton-hf tokenizer train`, a tokenizer.json, or a SentencePiece .model."
                )
            self._hf = Tokenizer.from_file(str(file))

    def encode(self, texts: list[str]) -> list[int]:
        """Token counts per text from one batched call (what the throughput column times)."""
        if self._sp is not None:
            return [len(ids) for ids in self._sp.encode(texts, num_threads=os.cpu_count() or 1)]
        return [len(e.ids) for e in self._hf.encode_batch_fast(texts, add_special_tokens=False)]

    def spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Per text, the (start, end) character span of every token."""
        if self._sp is not None:
            # Byte-fallback pieces of one character get zero-width spans at it: they still start inside its word.
            mapped = self._sp.encode(texts, return_type="offset_mapping", num_threads=os.cpu_count() or 1)
            return [m["offsets"] for m in mapped]
        return [e.offsets for e in self._hf.encode_batch(texts, add_special_tokens=False)]


@dataclass
class LanguageStats:
    tokenizer: str
    language: str
    documents: int
    bytes_per_token: float
    chars_per_token: float
    fertility: float | None
    continued_words: float | None
    tokens_per_second: float


def measure(tokenizer: TokenizerUnderTest, language: str, texts: list[str]) -> LanguageStats:
    tokenizer.encode(texts[:8])  # warm-up: thread pools, caches, lazy initialisation
    start = time.perf_counter()
    counts = tokenizer.encode(texts)
    elapsed = time.perf_counter() - start
    tokens = sum(counts)
    if tokens == 0:
        raise ValueError(f"language {language!r}: the texts are empty; nothing to measure.")
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    n_chars = sum(map(len, texts))
    words, pieces, continued = word_statistics(texts, tokenizer.spans(texts))
    spaced = language.lower() not in UNSPACED_LANGUAGES and words > 0 and n_chars / words <= MAX_WORD_CHARS
    return LanguageStats(
        tokenizer=tokenizer.name,
        language=language,
        documents=len(texts),
        bytes_per_token=n_bytes / tokens,
        chars_per_token=n_chars / tokens,
        fertility=pieces / words if spaced else None,
        continued_words=continued / words if spaced else None,
        tokens_per_second=tokens / elapsed if elapsed > 0 else float("inf"),
    )


def word_statistics(texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> tuple[int, int, int]:
    """(words, tokens in words, words of 2+ tokens) over whitespace-delimited words."""
    words = pieces = continued = 0
    for text, token_spans in zip(texts, spans, strict=True):
        starts = [s for s, _ in token_spans]
        ends = [e for _, e in token_spans]
        for match in _WORD.finditer(text):
            begin, end = match.span()
            inside = bisect.bisect_left(starts, end) - bisect.bisect_left(starts, begin)
            first = bisect.bisect_left(starts, begin) - 1  # a token starting before the word...
            runs_in = first >= 0 and ends[first] > begin  # ...and reaching into it (" word")
            count = inside + int(runs_in)
            words += 1
            pieces += count
            continued += count >= 2
    return words, pieces, continued


def read_language_corpus(corpus: str | os.PathLike, max_documents: int | None = None) -> dict[str, list[str]]:
    """One file per language (`lo_en.jsonl.gz` -> `en`, the part after the last `_`); jsonl with `text`, or txt."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise FileNotFoundError(f"--corpus {corpus}: not a directory; give a directory with one file per language.")
    files = sorted(p for p in corpus.iterdir() if p.name.endswith(_CORPUS_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"--corpus {corpus}: no .jsonl / .jsonl.gz / .txt files; give one file per language.")
    languages: dict[str, list[str]] = {}
    for path in files:
        stem = path.name
        for suffix in _CORPUS_SUFFIXES:
            stem = stem.removesuffix(suffix)
        texts = _read_texts(path, max_documents)
        if texts:
            languages.setdefault(stem.rsplit("_", 1)[-1], []).extend(texts)
        else:
            logger.warning("tokenizer report: %s holds no text; skipped", path)
    return languages


def _read_texts(path: Path, max_documents: int | None) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    texts = []
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if max_documents is not None and len(texts) >= max_documents:
                break
            if path.name.endswith(".txt"):
                texts.append(line)
                continue
            try:
                text = json.loads(line).get("text") if line.strip() else None
            except (ValueError, AttributeError):
                text = None
            if isinstance(text, str) and text:
                texts.append(text)
    return texts


def parse_named(specs: Sequence[str]) -> list[tuple[str, str]]:
    """`NAME=PATH` pairs (a bare PATH is named after its file or directory)."""
    named = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).stem or spec, spec
        if not name or not path:
            raise ValueError(f"--tokenizer {spec!r}: expected NAME=PATH.")
        named.append((name, path))
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"--tokenizer: names must be unique, got {names}.")
    return named


def tokenizer_report(
    tokenizers: Sequence[str] | Sequence[tuple[str, str]],
    corpus: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    max_documents: int | None = None,
) -> list[LanguageStats]:
    """Measures every tokenizer on every language; writes `report.md`, `report.json`, `report.png`."""
    named = parse_named(tokenizers) if tokenizers and isinstance(tokenizers[0], str) else list(tokenizers)
    if not named:
        raise ValueError("tokenizer report: give at least one --tokenizer NAME=PATH.")
    loaded = [TokenizerUnderTest(name, path) for name, path in named]  # fails on a bad path before any work
    languages = read_language_corpus(corpus, max_documents)
    rows = [measure(tok, lang, texts) for tok in loaded for lang, texts in languages.items()]
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "report.md").write_text(markdown_table(rows), encoding="utf-8")
        (output_dir / "report.json").write_text(json.dumps([asdict(r) for r in rows], indent=2), encoding="utf-8")
        plot_report(rows, output_dir / "report.png")
    return rows


def markdown_table(rows: Sequence[LanguageStats]) -> str:
    def fmt(value: float | None, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [
        "| tokenizer | language | docs | bytes/token | chars/token | fertility | continued words | tokens/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.tokenizer} | {r.language} | {r.documents} | {fmt(r.bytes_per_token)} | {fmt(r.chars_per_token)} | "
            f"{fmt(r.fertility)} | {fmt(r.continued_words)} | {r.tokens_per_second:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_report(rows: Sequence[LanguageStats], path: str | os.PathLike) -> None:
    """Grouped bars, one group per language and one bar per tokenizer, for the three quality metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokenizers = list(dict.fromkeys(r.tokenizer for r in rows))
    languages = list(dict.fromkeys(r.language for r in rows))
    by_key = {(r.tokenizer, r.language): r for r in rows}
    metrics = [
        ("bytes_per_token", "bytes per token (higher: better)"),
        ("fertility", "fertility (lower: better)"),
        ("continued_words", "continued words (lower: better)"),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6))
    width = 0.8 / len(tokenizers)
    for ax, (field, title) in zip(axes, metrics, strict=True):
        for i, name in enumerate(tokenizers):
            values = [getattr(by_key[(name, lang)], field) if (name, lang) in by_key else None for lang in languages]
            xs = [j + (i - (len(tokenizers) - 1) / 2) * width for j in range(len(languages))]
            ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=name)
        ax.set_xticks(range(len(languages)), languages)
        ax.set_title(title, fontsize=10)
        if any(getattr(by_key[key], field) is None for key in by_key):
            ax.set_xlabel("empty: language written without spaces", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(tokenizers), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "LanguageStats",
    "TokenizerUnderTest",
    "markdown_table",
    "measure",
    "plot_report",
    "read_language_corpus",
    "tokenizer_report",
    "word_statistics",
]
