"""The judge's prompts and the parsing of its rating: MT-Bench's single-answer grading (Zheng et al. 2023).

The texts are MT-Bench's four single-answer prompts as published with FastChat (`llm_judge/data/judge_prompts.jsonl`,
Apache-2.0), unchanged, so that scores are comparable with MT-Bench numbers:

- `single-v1`: turn 1, no reference;            `single-math-v1`: turn 1 against a reference answer;
- `single-v1-multi-turn`: turn 2, the whole conversation shown, the judge told to rate the second answer;
- `single-math-v1-multi-turn`: the same against the reference conversation.

Questions of more than two turns (MT-Bench has exactly two) use the multi-turn prompts with every turn shown and
"the second" replaced by "the last": for two turns this is the published text.

The rating: MT-Bench reads `[[x]]`, falling back to `[x]`. We take the last match (a judge that quotes the
format's example "Rating: [[5]]" before its own verdict is read correctly) and accept only 1 <= x <= 10. Anything
else is *unparsed*: counted and reported per model, never dropped silently nor replaced by a default score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RATE = (
    "After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly following this "
    'format: "[[rating]]", for example: "Rating: [[5]]".'
)
SINGLE_SYSTEM = "You are a helpful assistant."
SINGLE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    f"evaluation by providing a short explanation. Be as objective as possible. {_RATE}\n\n"
    "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
SINGLE_REFERENCE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider correctness and helpfulness. "
    "You will be given a reference answer and the assistant's answer. Begin your evaluation by comparing the "
    "assistant's answer with the reference answer. Identify and correct any mistakes. Be as objective as possible. "
    f"{_RATE}\n\n"
    "[Question]\n{question}\n\n[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
MULTI_TURN_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to the "
    "user question displayed below. Your evaluation should consider factors such as the helpfulness, relevance, "
    "accuracy, depth, creativity, and level of detail of the response. You evaluation should focus on the "
    "assistant's answer to the {which} user question. Begin your evaluation by providing a short explanation. Be "
    f"as objective as possible. {_RATE}\n\n"
)
MULTI_TURN_REFERENCE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to the "
    "user question. Your evaluation should consider correctness and helpfulness. You will be given a reference "
    "answer and the assistant's answer. You evaluation should focus on the assistant's answer to the {which} "
    "question. Begin your evaluation by comparing the assistant's answer with the reference answer. Identify and "
    f"correct any mistakes. Be as objective as possible. {_RATE}\n\n"
)

PROMPT_NAMES = ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn")

_DOUBLE = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
_SINGLE = re.compile(r"\[(\d+(?:\.\d+)?)\]")


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    """MT-Bench's name of the prompt used"""
    messages: tuple[dict[str, str], ...]
    """system + user messages, as sent to the judge"""


def _conversation(questions: list[str], answers: list[str], speaker: str) -> str:
    parts = []
    for question, answer in zip(questions, answers, strict=True):
        parts.append(f"### User:\n{question}\n\n### {speaker}:\n{answer}\n\n")
    return "".join(parts)


def build_judge_prompt(
    questions: list[str] | tuple[str, ...],
    answers: list[str] | tuple[str, ...],
    turn: int,
    reference: list[str] | tuple[str, ...] | None = None,
) -> JudgePrompt:
    """The judge's messages for the answer to turn `turn` (0-based) of a conversation.

    `answers` are the model's own answers: in a multi-turn question the model saw its earlier answers, and the
    judge sees them too (as in MT-Bench). `reference` (one per turn, "" where none) selects the math prompts.
    """
    if not 0 <= turn < len(questions) or len(answers) <= turn:
        raise ValueError(f"turn {turn} out of range for {len(questions)} questions and {len(answers)} answers")
    use_reference = bool(reference) and bool(reference[turn].strip())
    if turn == 0:
        if use_reference:
            text = SINGLE_REFERENCE.format(question=questions[0], answer=answers[0], reference=reference[0])
            return JudgePrompt("single-math-v1", _messages(SINGLE_SYSTEM, text))
        return JudgePrompt(
            "single-v1", _messages(SINGLE_SYSTEM, SINGLE.format(question=questions[0], answer=answers[0]))
        )
    which = "second" if turn == 1 else "last"
    shown_q, shown_a = list(questions[: turn + 1]), list(answers[: turn + 1])
    conversation = (
        "<|The Start of Assistant A's Conversation with User|>\n\n"
        + _conversation(shown_q, shown_a, "Assistant A")
        + "<|The End of Assistant A's Conversation with User|>"
    )
    if use_reference:
        ref = [r or "(none)" for r in reference[: turn + 1]]
        text = (
            "<|The Start of Reference Answer|>\n\n"
            + _conversation(shown_q, ref, "Reference answer")
            + "<|The End of Reference Answer|>\n\n\n"
            + conversation
        )
        return JudgePrompt(
            "single-math-v1-multi-turn", _messages(MULTI_TURN_REFERENCE_SYSTEM.format(which=which), text)
        )
    return JudgePrompt("single-v1-multi-turn", _messages(MULTI_TURN_SYSTEM.format(which=which), conversation))


def _messages(system: str, user: str) -> tuple[dict[str, str], ...]:
    return ({"role": "system", "content": system}, {"role": "user", "content": user})


def parse_rating(text: str) -> float | None:
    """The judge's 1-10 rating from its reply, or None when there is none to read (see the module docstring)."""
    for pattern in (_DOUBLE, _SINGLE):
        matches = pattern.findall(text or "")
        if matches:
            value = float(matches[-1])
            return value if 1 <= value <= 10 else None
    return None


__all__ = ["PROMPT_NAMES", "JudgePrompt", "build_judge_prompt", "parse_rating"]
