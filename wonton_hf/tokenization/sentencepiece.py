"""SentencePiece BPE model -> `PreTrainedTokenizerFast` with identical ids, for the original Wonton tokenizer.

SentencePiece's BPE encoder (bpe_model.cc) does, in order: replace " " by "▁" (identity normalisation,
no dummy prefix here); cut the text into symbols, taking the longest user-defined symbol (`\\n`, `\\t`,
`\\r`, runs of 2..23 "▁", digits) as one frozen symbol where one starts; then repeatedly merge the
adjacent pair whose concatenation is the highest-scoring vocabulary piece (leftmost first); finally
spell every symbol still outside the vocabulary as `<0xNN>` bytes. Each step maps onto `tokenizers`:

- `Replace(" ", "▁")` normalizer;
- user-defined symbols as *normalized* added tokens: the added vocabulary matches them leftmost-longest
  on the normalized text, exactly SentencePiece's prefix matcher, and nothing merges across them
  (transformers' generic converter registers them un-normalized, so "▁▁" never matches a "  " run);
- BPE merges: every pair (left, right) of pieces whose concatenation is a piece, ranked by that piece's
  score. Ties between two pairs making the same piece are broken by rank (shorter left part first)
  where SentencePiece takes the leftmost; both are only ever pending together on periodic strings, and
  the parity test over the whole corpus and the adversarial set found no case where it matters;
- a `Metaspace(split=True)` pre-tokenizer cutting before each "▁": no piece of a SentencePiece BPE model
  has "▁" after its first character (checked at conversion; we refuse models where that fails), so the
  cut changes nothing but lets `tokenizers` cache words;
- `byte_fallback=True`, and a decoder `Replace("▁", " ") -> ByteFallback -> Fuse` (no `Strip`: there is no
  dummy prefix to remove).

Control symbols (`<pad>`, `<s>`, `</s>`) and `<unk>` are special added tokens. SentencePiece never matches
them inside text. `tokenizers` does by default, and chat templates that write "<s>"/"</s>" rely on it, so
that stays the default (as for every Llama-style HF tokenizer and for `trainer.py`'s tokenizers): the one
place where ids differ from SentencePiece is text that literally contains "<s>", "</s>", "<pad>" or
"<unk>" (none of the 8,869 corpus documents does). `split_special_tokens=True` (at conversion, or per
call) gives SentencePiece's behaviour exactly; use it to tokenize untrusted raw text for pretraining.

Decode equals SentencePiece's for every id sequence whose byte tokens spell valid UTF-8, which includes
everything `encode` produces. Two documented differences on other sequences: a run of byte tokens that is
not valid UTF-8 becomes one U+FFFD per byte (`tokenizers`' ByteFallback decoder) where SentencePiece keeps
the valid characters inside the run; and special tokens are printed unless `skip_special_tokens=True`
(SentencePiece drops control symbols and prints `<unk>` as " ⁇ ").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2
SPACE = "▁"


def load_model_proto(path: str | os.PathLike):
    """Reads a SentencePiece `.model` (or the `tokenizer.model` in a directory)."""
    from sentencepiece import sentencepiece_model_pb2

    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.model"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no SentencePiece model; give a .model file or a directory holding tokenizer.model."
        )
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError: the file is not a SentencePiece model at all
        raise ValueError(f"{path}: not a SentencePiece model ({err}).") from err
    return proto


def _check_supported(proto, path: object) -> None:
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    problems = []
    if spec.model_type != _BPE:
        problems.append("model_type is not BPE (Unigram models need a Unigram converter)")
    if norm.precompiled_charsmap or norm.name not in ("identity", ""):
        problems.append(f"normalization {norm.name!r} is not identity")
    if norm.add_dummy_prefix or norm.remove_extra_whitespaces:
        problems.append("add_dummy_prefix / remove_extra_whitespaces are set")
    if spec.treat_whitespace_as_suffix:
        problems.append("treat_whitespace_as_suffix is set")
    inner = [p.piece for p in proto.pieces if p.type == _NORMAL and SPACE in p.piece[1:]]
    if inner:
        problems.append(f"{len(inner)} pieces have '▁' after their first character (e.g. {inner[0]!r})")
    if problems:
        raise ValueError(f"{path}: cannot convert with exact parity: " + "; ".join(problems) + ".")


def bpe_merges(proto) -> list[tuple[str, str]]:
    """All pairs of normal pieces that concatenate to a normal piece, best piece score first."""
    scores = {p.piece: p.score for p in proto.pieces if p.type == _NORMAL}
    ranked = []
    for piece, score in scores.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in scores and right in scores:
                ranked.append((-score, cut, left, right))
    ranked.sort()
    return [(left, right) for _, _, left, right in ranked]


def build_backend(proto, path: object = "model") -> Tokenizer:
    """The `tokenizers` pipeline equivalent to the SentencePiece model (see the module docstring)."""
    _check_supported(proto, path)
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=bpe_merges(proto), unk_token=unk, byte_fallback=proto.trainer_spec.byte_fallback)
    )
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_tokens(
        [AddedToken(p.piece, normalized=True, special=False) for p in proto.pieces if p.type == _USER_DEFINED]
    )
    tokenizer.add_special_tokens(
        [AddedToken(p.piece, normalized=False, special=True) for p in proto.pieces if p.type in (_CONTROL, _UNKNOWN)]
    )
    return tokenizer


def convert_sentencepiece(
    model_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    model_max_length: int = 2048,
    split_special_tokens: bool = False,
) -> PreTrainedTokenizerFast:
    """Converts a SentencePiece BPE model; ids equal `SentencePieceProcessor.encode` (see module docstring)."""
    proto = load_model_proto(model_path)
    backend = build_backend(proto, model_path)
    spec = proto.trainer_spec
    pieces = proto.pieces

    def piece(index: int) -> str | None:
        return pieces[index].piece if 0 <= index < len(pieces) else None

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=piece(spec.pad_id),
        unk_token=piece(spec.unk_id),
        bos_token=piece(spec.bos_id),
        eos_token=piece(spec.eos_id),
        clean_up_tokenization_spaces=False,
        split_special_tokens=split_special_tokens,
        model_max_length=model_max_length,
    )
    if output_dir is not None:
        from .trainer import save_tokenizer

        save_tokenizer(tokenizer, output_dir)
    logger.info("converted %s: %d pieces", model_path, len(pieces))
    return tokenizer


__all__ = ["bpe_merges", "build_backend", "convert_sentencepiece", "load_model_proto"]
