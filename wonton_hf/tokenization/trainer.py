"""BPE training with the paper's tokenizer rules, on HF `tokenizers`, saved as a `PreTrainedTokenizerFast`.

The rules of the Wonton tokenizer (section 2.3 of the report) and how each is enforced here:

- never an unknown token: a character-level BPE with byte fallback; characters outside the learnt
  alphabet become `<0xNN>` byte tokens, which the decoder turns back into UTF-8;
- numbers split into single digits, `\\n` `\\t` `\\r` as their own tokens, one token for each run of
  1..24 spaces: all three are cuts made by one pre-tokenizer regex (`PRETOKENIZE_PATTERN`), so BPE can
  never merge across them, and every run length is in the vocabulary;
- no dummy prefix and lossless decode: spaces are kept as spaces inside tokens (no `▁` rewriting, no
  normalizer), so `decode(encode(s)) == s` for every valid string.

Ids: `<pad>` `<unk>` `<s>` `</s>` = 0..3, the 256 `<0xNN>` byte tokens = 4..259, the runs of 2..24 spaces =
260..282 (the same ids for every corpus), then the alphabet and the merges in the order they were learnt.

Speed: the pipeline is one regex split plus a BPE whose `ignore_merges` returns whole in-vocabulary
words without replaying merges. Words are counted once, in one streaming pass on all cores; merges are
then learnt single-threaded (rayon's per-merge dispatch costs more than it saves once most merges touch
a handful of words: on 2 cores, 3.5 s instead of 1.7 s for 100k merges, 1.4 s instead of 0.9 s for 8k).
The byte tokens and space runs are the trainer's special tokens, so the trainer itself lays out the final
ids and stops at exactly the requested size; its model is used as it is (rebuilding and copying it
afterwards cost 0.6 s at 100k). `benchmarks/tokenizer_train_vs_sentencepiece.py` measures training time
(and where it goes), held-out compression and encode throughput against SentencePiece.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

from ..data.sources import DataSource
from .corpus import CorpusStats, batched, mix_texts, normalised_weights, parse_inputs

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
"""Ids 0..3, as in the original tokenizer (pad 0, unk 1, bos 2, eos 3)."""
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
MAX_SPACE_RUN = 24
SPACE_RUNS = tuple(" " * n for n in range(2, MAX_SPACE_RUN + 1))
"""Every run of 2..24 spaces is one token, whether BPE would learn it or not (one space is in the alphabet)."""
PRETOKENIZE_PATTERN = "|".join(
    [
        r" ?[\p{L}\p{M}]+",  # a word, with the single space before it (no dummy prefix: a text-initial word has none)
        r" ?[^ \n\t\r\p{L}\p{M}\p{N}]+",  # punctuation, symbols and other spaces (NBSP, U+3000), likewise
        f" {{1,{MAX_SPACE_RUN}}}",  # a run of 1..24 spaces, one token (longer runs: several)
        r"\p{N}",  # one digit
        r"[\n\t\r]",  # \n, \t and \r alone
    ]
)
REQUIRED_CHARACTERS = tuple("0123456789") + ("\n", "\t", "\r", " ")
VOCAB_MULTIPLE = 128
DEFAULT_VOCAB_SIZE = 139_776
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + len(BYTE_TOKENS) + len(SPACE_RUNS) + len(REQUIRED_CHARACTERS)
RESERVED_TOKEN = "<reserved_{}>"


def round_vocab_size(size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """Rounds up so the embedding and output matrices tile evenly on GPUs (139,776 = 1092 x 128)."""
    return int(math.ceil(size / multiple) * multiple)


@dataclass
class BPETrainingConfig:
    """Options of one training run; checked by `validate` before any text is read."""

    vocab_size: int = DEFAULT_VOCAB_SIZE
    """Requested size; rounded up to a multiple of 128, specials and byte tokens included."""
    weights: dict[str, float] | None = None
    """Share of the training bytes per source name; None reads every source whole."""
    max_token_length: int | None = None
    """Longest learnt token in characters (SentencePiece's `max_sentencepiece_length`); None: no limit, which
    compressed held-out text better than 16 in `benchmarks/tokenizer_train_vs_sentencepiece.py`."""
    alphabet_fraction: float = 0.25
    """At most this share of the vocabulary goes to single characters; rarer ones fall back to bytes."""
    min_frequency: int = 0
    """Pairs seen fewer times are never merged."""
    show_progress: bool = False
    """Progress bars of `tokenizers` (reading, counting, merges)."""
    text_field: str = "text"
    """Field of jsonl records holding the text."""
    max_documents_per_source: int | None = None
    """Read at most this many documents of each source (a quick tokenizer for a demo run); None: all."""

    def validate(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(
                f"tokenizer training: `vocab_size` {self.vocab_size!r} is smaller than the 4 special tokens, 256 byte "
                f"tokens, digits, control characters and space runs need ({MIN_VOCAB_SIZE}); use at least "
                f"{round_vocab_size(MIN_VOCAB_SIZE)}."
            )
        if not 0 < self.alphabet_fraction <= 1:
            raise ValueError(
                f"tokenizer training: `alphabet_fraction` must be in (0, 1], got {self.alphabet_fraction}."
            )
        if self.max_token_length is not None and self.max_token_length < 2:
            raise ValueError(
                f"tokenizer training: `max_token_length` must be None or >= 2, got {self.max_token_length}."
            )


@dataclass
class TokenizerTrainingResult:
    """The trained tokenizer and what it was trained on."""

    tokenizer: PreTrainedTokenizerFast
    requested_vocab_size: int
    vocab_size: int
    stats: CorpusStats = field(default_factory=CorpusStats)
    reserved_tokens: int = 0
    """Placeholder tokens added because the corpus ran out of pairs to merge before reaching `vocab_size`."""

    def summary(self) -> str:
        replaced = sum(self.stats.replaced_bytes.values())
        skipped = sum(sum(c.values()) for c in self.stats.skipped.values())
        by_source = "; ".join(
            f"{name}: " + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
            for name, counts in self.stats.skipped.items()
            if counts
        )
        size_note = f" (requested {self.requested_vocab_size:,}, rounded up to a multiple of {VOCAB_MULTIPLE})"
        return (
            f"vocabulary {self.vocab_size:,}"
            + (size_note if self.vocab_size != self.requested_vocab_size else "")
            + f"; {self.stats.total_documents:,} documents, {sum(self.stats.bytes.values()):,} bytes"
            + f"; {replaced:,} undecodable bytes replaced; {skipped:,} records skipped"
            + (f" ({by_source})" if by_source else "")
            + (f"; {self.reserved_tokens} reserved placeholder tokens" if self.reserved_tokens else "")
        )


def build_pipeline() -> Tokenizer:
    """The untrained `tokenizers` pipeline with the paper's rules (no normalizer: text is kept byte-exact)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated")
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


def train_tokenizer(
    inputs: Sequence[str | os.PathLike | DataSource] | str | os.PathLike | None = None,
    config: BPETrainingConfig | None = None,
    output_dir: str | os.PathLike | None = None,
    *,
    texts: Iterable[str] | None = None,
    **overrides: object,
) -> TokenizerTrainingResult:
    """Trains a BPE tokenizer with the paper's rules.

    Give either `inputs` (files/globs, `NAME=GLOB` naming a source for `weights`, or `DataSource`s) or
    `texts` (any iterable of strings: `train_tokenizer(texts=docs, vocab_size=8192)` is what the demo
    uses). Text is streamed: memory holds the word counts, never the corpus. Keyword `overrides` set
    `BPETrainingConfig` fields.
    """
    config = config or BPETrainingConfig()
    for name, value in overrides.items():
        if not hasattr(config, name):
            raise ValueError(f"train_tokenizer: unknown option `{name}`; see BPETrainingConfig.")
        setattr(config, name, value)
    config.validate()
    stats = CorpusStats()
    stream = _texts(inputs, texts, config, stats)
    target = round_vocab_size(config.vocab_size)
    pipeline = build_pipeline()
    trainer = trainers.BpeTrainer(  # its special tokens take the first ids, in this order: the final layout
        vocab_size=target,
        min_frequency=config.min_frequency,
        show_progress=config.show_progress,
        special_tokens=[*SPECIAL_TOKENS, *BYTE_TOKENS, *SPACE_RUNS],
        limit_alphabet=_alphabet_limit(target, config.alphabet_fraction),
        initial_alphabet=list(REQUIRED_CHARACTERS),
        max_token_length=config.max_token_length,
    )
    with _parallel_counting_sequential_merges() as batches:
        pipeline.train_from_iterator(batches(batched(stream)), trainer)
    if stats.total_documents == 0:
        raise ValueError("tokenizer training: the corpus has no text (all inputs empty or skipped); check the inputs.")
    for source, count in stats.replaced_bytes.items():
        logger.warning("tokenizer corpus: %s undecodable bytes replaced by U+FFFD in source %s", f"{count:,}", source)
    tokenizer, reserved = _finalise(pipeline, target)
    result = TokenizerTrainingResult(tokenizer, config.vocab_size, len(tokenizer), stats, reserved)
    logger.info("trained tokenizer: %s", result.summary())
    if output_dir is not None:
        save_tokenizer(tokenizer, output_dir)
    return result


def _alphabet_limit(target: int, fraction: float) -> int:
    """At most `fraction` of the vocabulary, and never more than the ids left after the fixed tokens.

    Without the second bound, `alphabet_fraction` near 1 on a corpus with many distinct characters gives an
    alphabet that alone overflows the vocabulary; the characters cut here fall back to byte tokens.
    """
    fixed = len(SPECIAL_TOKENS) + len(BYTE_TOKENS) + len(SPACE_RUNS)
    return min(int(target * fraction), target - fixed)


def _texts(inputs: object, texts: Iterable[str] | None, config: BPETrainingConfig, stats: CorpusStats) -> Iterable[str]:
    if (inputs is None) == (texts is None):
        raise ValueError("train_tokenizer: give exactly one of `inputs` (files, globs, DataSources) or `texts`.")
    if texts is not None:
        if isinstance(texts, str):
            raise ValueError(
                "train_tokenizer: `texts` must be an iterable of strings, not one string; wrap it in a list."
            )
        if config.weights:
            raise ValueError("train_tokenizer: `weights` need named file sources (`NAME=GLOB` inputs), not `texts`.")
        return _counted(texts, stats)
    if isinstance(inputs, str | os.PathLike | DataSource):
        inputs = [inputs]
    sources = parse_inputs(list(inputs), config.text_field)
    files = [f for s in sources for f in s.files]
    if all(os.path.isfile(f) and os.path.getsize(f) == 0 for f in files):
        raise ValueError(
            f"tokenizer training: every input file is empty ({', '.join(files[:3])}); nothing to train on."
        )
    if config.weights:
        normalised_weights(sources, config.weights)  # a misnamed weight fails here, before any reading
    return mix_texts(sources, stats, config.weights, config.max_documents_per_source)


def _counted(texts: Iterable[str], stats: CorpusStats) -> Iterable[str]:
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"train_tokenizer: texts must be str, got {type(text).__name__}.")
        if text:
            yield stats.add("texts", text)


_PARALLELISM = "TOKENIZERS_PARALLELISM"


@contextmanager
def _parallel_counting_sequential_merges() -> Iterator[Callable[[Iterable[list[str]]], Iterator[list[str]]]]:
    """Word counting on all cores, merge learning on one (see the module docstring).

    `tokenizers` reads `TOKENIZERS_PARALLELISM` at each parallel section, and one `train_from_iterator` call
    both counts and merges; the wrapper flips the variable when the trainer drains the last batch, the
    boundary between the two phases. A user's explicit "false" is kept for both phases.
    """
    previous = os.environ.get(_PARALLELISM)
    parallel_counting = (previous or "true").lower() not in ("0", "false", "off", "no")

    def wrap(batches: Iterable[list[str]]) -> Iterator[list[str]]:
        yield from batches
        os.environ[_PARALLELISM] = "false"

    os.environ[_PARALLELISM] = "true" if parallel_counting else "false"
    try:
        yield wrap
    finally:
        if previous is None:
            os.environ.pop(_PARALLELISM, None)
        else:
            os.environ[_PARALLELISM] = previous


def _finalise(pipeline: Tokenizer, target: int) -> tuple[PreTrainedTokenizerFast, int]:
    """Moves the trained model into a fresh pipeline and wraps it, padding with reserved tokens if short.

    The trainer already laid out the ids (specials, byte tokens and space runs first, as its special tokens,
    then the alphabet and the merges) and stopped at exactly `target`, so the model is adopted as it is:
    rebuilding a 100k `models.BPE` from Python dicts and letting transformers deep-copy it cost 0.6 s.
    A fresh pipeline, because training registered the byte tokens and space runs as added special tokens,
    which would make `skip_special_tokens` drop them and match `<0x41>` typed in text.
    """
    size = pipeline.get_vocab_size(with_added_tokens=False)
    if size > target:  # `_alphabet_limit` prevents it; a guard in case `tokenizers` ever counts differently
        raise ValueError(
            f"tokenizer training: specials, byte tokens, space runs and the alphabet take {size:,} ids, more than "
            f"vocab_size {target:,}; lower `alphabet_fraction` (rarer characters then fall back to byte tokens) "
            f"or raise `vocab_size`."
        )
    reserved = target - size
    final = build_pipeline()
    if reserved:
        logger.warning(
            "tokenizer corpus ran out of pairs to merge: %d reserved placeholder tokens fill the vocabulary", reserved
        )
        model = json.loads(pipeline.model.__getstate__())
        vocab = model["vocab"] | {RESERVED_TOKEN.format(i): size + i for i in range(reserved)}
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        final.model = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, ignore_merges=True)
    else:
        final.model = pipeline.model  # shares the trained Rust model, no copy
    return _wrap(final), reserved


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """`PreTrainedTokenizerFast` around `tokenizer` without copying it.

    `PreTrainedTokenizerFast(tokenizer_object=...)` deep-copies the backend (a pickle round trip, 0.25 s for a
    100k vocabulary). A backend set before `__init__` is adopted as it is: that is how transformers' own
    tokenizer classes (e.g. `LlamaTokenizer`) build theirs, so the result is the same object a
    `tokenizer_object` would give, minus the copy.
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast  # ~1 s: only once training is done, not at start-up

    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    wrapped = PreTrainedTokenizerFast.__new__(PreTrainedTokenizerFast)
    wrapped._tokenizer = tokenizer
    wrapped.__init__(
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    return wrapped


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, output_dir: str | os.PathLike) -> None:
    """`save_pretrained`, plus the `special_tokens_map.json` that transformers 4.x readers still look for."""
    tokenizer.save_pretrained(output_dir)
    special_map = Path(output_dir) / "special_tokens_map.json"
    if not special_map.exists():
        names = ("bos_token", "eos_token", "unk_token", "pad_token")
        tokens = {name: getattr(tokenizer, name) for name in names if getattr(tokenizer, name, None) is not None}
        special_map.write_text(json.dumps(tokens, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


__all__ = [
    "BPETrainingConfig",
    "DEFAULT_VOCAB_SIZE",
    "PRETOKENIZE_PATTERN",
    "SPECIAL_TOKENS",
    "TokenizerTrainingResult",
    "build_pipeline",
    "round_vocab_size",
    "save_tokenizer",
    "train_tokenizer",
]
