"""Small multilingual texts written for these tests, and the shared corpus when `../shared` is present."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from ..paths import SHARED, needs_shared

SHARED_CORPUS = SHARED / "corpus"
ORIGINAL_SPM = SHARED / "reference" / "nyonic-tokenizer-v1" / "tokenizer.model"
LANGUAGES = ("en", "de", "fr", "es", "it", "zh", "ja", "ko")

SAMPLES = {
    "en": "The quick brown fox jumps over the lazy dog. In 2024, 1,234 people read 56 books.\n"
    "def main():\n    return 42\n\tindented with a tab\r\nWindows line end.",
    "de": "Die Straße war nass, und die Bäume rauschten. Über 300 Menschen kamen zur Versammlung.",
    "fr": "L'été dernier, nous sommes allés à la plage. Ça coûte 15 euros, n'est-ce pas ?",
    "es": "¿Dónde está la biblioteca? El año pasado leí 12 libros en español.",
    "it": "La città è bellissima; perché non ci andiamo insieme domani alle 9?",
    "zh": "今天天气很好，我们去公园散步吧。北京是中国的首都，有很多历史古迹。",
    "ja": "今日はいい天気ですね。東京タワーに行きましょう。カタカナとひらがなを勉強します。",
    "ko": "오늘 날씨가 정말 좋네요. 서울은 한국의 수도입니다. 한국어를 공부하고 있어요.",
}


def sample_texts(repeat: int = 20) -> list[str]:
    """Varied documents: each sample re-cut and numbered so BPE has pairs to learn beyond one sentence."""
    texts = []
    for i in range(repeat):
        for text in SAMPLES.values():
            words = text.split(" ")
            texts.append(" ".join(words[i % len(words) :] + words[: i % len(words)]) + f" {i}")
    return texts


def write_jsonl_gz(path: Path, texts: list[str], lang: str) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": i, "lang": lang, "text": text}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def language_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`lo_<lang>.jsonl.gz`, one per language, like ../shared/corpus but tiny."""
    root = tmp_path_factory.mktemp("corpus")
    for lang, text in SAMPLES.items():
        write_jsonl_gz(root / f"lo_{lang}.jsonl.gz", [text, text.upper() + " 7"], lang)
    return root


def shared_documents(per_language: int | None = None) -> dict[str, list[str]]:
    documents = {}
    for lang in LANGUAGES:
        with gzip.open(SHARED_CORPUS / f"lo_{lang}.jsonl.gz", "rt", encoding="utf-8") as f:
            texts = []
            for line in f:
                if per_language is not None and len(texts) >= per_language:
                    break
                texts.append(json.loads(line)["text"])
        documents[lang] = texts
    return documents


needs_shared_corpus = needs_shared("corpus")
needs_original_spm = pytest.mark.skipif(
    not ORIGINAL_SPM.is_file(), reason="../shared/reference/nyonic-tokenizer-v1 not available"
)


def train_small_spm(path: Path, lines: Iterable[str], vocab_size: int, **options: object) -> Path:
    """A SentencePiece BPE with the original tokenizer's options (byte fallback, split digits, identity
    normalisation, no dummy prefix, special ids 0-3), trained here and written to `path`."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
        character_coverage=0.98,
        hard_vocab_limit=False,
        **options,
    )
    path.write_bytes(model.getvalue())
    return path
