"""The Wonton tokenizer: BPE training with the paper's rules, a per-language report, the original converted."""

from .report import tokenizer_report
from .sentencepiece import convert_sentencepiece
from .trainer import (
    DEFAULT_VOCAB_SIZE,
    SPECIAL_TOKENS,
    BPETrainingConfig,
    TokenizerTrainingResult,
    round_vocab_size,
    save_tokenizer,
    train_tokenizer,
)

__all__ = [
    "BPETrainingConfig",
    "DEFAULT_VOCAB_SIZE",
    "SPECIAL_TOKENS",
    "TokenizerTrainingResult",
    "convert_sentencepiece",
    "round_vocab_size",
    "save_tokenizer",
    "tokenizer_report",
    "train_tokenizer",
]
