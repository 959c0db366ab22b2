"""Conversations and records written for these tests, in every layout the adapters read."""

from __future__ import annotations

CONVERSATIONS = [
    [
        {"role": "user", "content": "What is the capital of Italy?"},
        {"role": "assistant", "content": "The capital of Italy is Rome."},
    ],
    [
        {"role": "system", "content": "Antworte kurz."},
        {"role": "user", "content": "Wie heißt die Hauptstadt von Deutschland?"},
        {"role": "assistant", "content": "Berlin."},
        {"role": "user", "content": "Und von Frankreich?"},
        {"role": "assistant", "content": "Paris, la capitale de la France."},
    ],
    [
        {"role": "user", "content": "用一句话介绍北京。"},
        {"role": "assistant", "content": "北京是中国的首都，有很多历史古迹。"},
    ],
    [
        {"role": "user", "content": "Translate to Spanish: the library opens at nine."},
        {"role": "assistant", "content": "La biblioteca abre a las nueve."},
        {"role": "user", "content": "And in Italian?"},
        {"role": "assistant", "content": "La biblioteca apre alle nove."},
        {"role": "user", "content": "次は日本語で。"},
        {"role": "assistant", "content": "図書館は九時に開きます。"},
    ],
    [
        {"role": "user", "content": "Write a Python function that squares a number."},
        {"role": "assistant", "content": "def square(x):\n    return x * x"},
    ],
    [{"role": "user", "content": "오늘 날씨 어때요?"}, {"role": "assistant", "content": "오늘 날씨가 정말 좋네요."}],
]

TEXTS = [
    "The quick brown fox jumps over the lazy dog. In 2024, 1,234 people read 56 books.",
    "Die Straße war nass, und die Bäume rauschten. Über 300 Menschen kamen zur Versammlung.",
    "L'été dernier, nous sommes allés à la plage. Ça coûte 15 euros, n'est-ce pas ?",
    "¿Dónde está la biblioteca? El año pasado leí 12 libros en español.",
    "La città è bellissima; perché non ci andiamo insieme domani alle 9?",
    "今天天气很好，我们去公园散步吧。北京是中国的首都，有很多历史古迹。",
    "今日はいい天気ですね。東京タワーに行きましょう。図書館は九時に開きます。",
    "오늘 날씨가 정말 좋네요. 서울은 한국의 수도입니다.",
    "def square(x):\n    return x * x\n",
]


def tokenizer_texts() -> list[str]:
    texts = TEXTS * 10
    for conversation in CONVERSATIONS:
        texts += [m["content"] for m in conversation] * 3
    return texts
