"""The Wonton tokenizer: BPE training with the paper's rules, a per-language report, the original converted.

Names load on first use, so `wonton-hf tokenizer --help` answers without importing torch or transformers.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "tokenizer_report": "report",
    "convert_sentencepiece": "sentencepiece",
    "DEFAULT_VOCAB_SIZE": "trainer",
    "SPECIAL_TOKENS": "trainer",
    "BPETrainingConfig": "trainer",
    "TokenizerTrainingResult": "trainer",
    "round_vocab_size": "trainer",
    "save_tokenizer": "trainer",
    "train_tokenizer": "trainer",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
