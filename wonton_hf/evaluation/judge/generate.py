"""Answers of the evaluated models: the chat template for chat models, plain continuation for base models.

The paper compares its chat model with the base model it was fine-tuned from. A base model has no notion of
`[INST]`, so it is prompted as a plain transcript it can continue (its earlier answers included):

    Question: Q1
    Answer: A1

    Question: Q2
    Answer:

and its continuation is cut where it starts a new "Question:" (or at `</s>`). A chat model gets its own chat
template (`apply_chat_template`, the `[INST]` format for Wonton chat models), its earlier answers as assistant turns,
and stops at `</s>` or `[INST]`. Decoding is greedy by default (repeatable, so cached judgments stay valid).

Generation runs turn by turn over all questions (batched, left-padded): turn t of every question needs the
model's answer to turn t-1. Every answer is appended to `answers/<label>.jsonl` as it is produced, keyed by
question, turn and the generation settings, so a re-run (or a resumed crash) generates only what is missing.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .questions import Question

logger = logging.getLogger(__name__)

MODES = ("chat", "base")
BASE_QUESTION = "Question: "
BASE_ANSWER = "Answer:"


@dataclass(frozen=True)
class ModelSpec:
    label: str
    """the model's name in records, tables and the figure"""
    path: str
    """a save_pretrained directory or a hub id"""
    mode: str
    """"chat" (chat template) or "base" (plain continuation prompts)"""

    @classmethod
    def parse(cls, text: str, mode: str) -> ModelSpec:
        """`[LABEL=]PATH` as given on the command line; the label defaults to the directory name or hub id."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        label, sep, path = text.partition("=")
        if not sep:
            path = text
            label = Path(text).name if Path(text).expanduser().exists() else text
        if not path or not label:
            raise ValueError(f"Expected [LABEL=]PATH, got {text!r}.")
        return cls(label=label, path=path, mode=mode)


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 512
    temperature: float = 0.0
    """0: greedy"""
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0

    def key(self, spec: ModelSpec) -> str:
        """What makes an answer reusable: the model, the prompting mode and the decoding settings."""
        settings = {k: v for k, v in asdict(self).items() if k != "batch_size"}
        blob = json.dumps({"path": spec.path, "mode": spec.mode, **settings}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_model(path: str, device: str | None = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Model and tokenizer for inference: bf16 on a GPU that supports it, fp32 otherwise; eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import wonton_hf.models  # noqa: F401  (registers Wonton with the Auto classes)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code).to(device)
    model.eval()
    return model, tokenizer


def check_models(specs: list[ModelSpec], trust_remote_code: bool = False) -> None:
    """Before any model is loaded: every path exists, needs no unconsented code, and every chat model's tokenizer
    has a chat template (a base checkpoint given as --chat would otherwise be prompted with a template it never saw)."""
    from transformers import AutoTokenizer

    from ...remote_code import check_remote_code

    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Model labels must be distinct, got {labels}; name them with LABEL=PATH.")
    for spec in specs:
        if spec.path.startswith(("/", "./", "../", "~")) and not Path(spec.path).expanduser().is_dir():
            raise FileNotFoundError(
                f"Model directory {spec.path} does not exist (give a save_pretrained directory or a hub id)."
            )
        check_remote_code(spec.path, trust_remote_code, flag="--trust-remote-code")
        if spec.mode == "chat":
            tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=trust_remote_code)
            if not tokenizer.chat_template:
                raise ValueError(
                    f"{spec.label} ({spec.path}) is given as a chat model but its tokenizer has no chat template. "
                    "Pass it with --base (plain continuation prompts), or give it the Wonton template "
                    "(wonton_hf.chat.install_chat_template) and save the tokenizer again."
                )


def base_prompt(turns: tuple[str, ...] | list[str], answers: list[str]) -> str:
    parts = []
    for i, question in enumerate(turns):
        parts.append(f"{BASE_QUESTION}{question}\n{BASE_ANSWER}")
        if i < len(answers):
            parts.append(f" {answers[i]}\n\n")
    return "".join(parts)


def chat_messages(turns: tuple[str, ...] | list[str], answers: list[str]) -> list[dict[str, str]]:
    messages = []
    for i, question in enumerate(turns):
        messages.append({"role": "user", "content": question})
        if i < len(answers):
            messages.append({"role": "assistant", "content": answers[i]})
    return messages


def clean_base_answer(text: str) -> str:
    """A base model's continuation up to the point where it starts the next question of the transcript."""
    for stop in (f"\n{BASE_QUESTION.strip()}", f"\n{BASE_ANSWER}"):
        cut = text.find(stop)
        if cut >= 0:
            text = text[:cut]
    return text.strip()


class AnswerStore:
    """`answers/<label>.jsonl`: one record per (question, turn), appended as produced (turns counted from 1 in the
    file, as in judgments.jsonl; from 0 in `answers`)."""

    def __init__(self, path: Path, spec: ModelSpec, settings_key: str) -> None:
        self.path, self.spec, self.settings_key = path, spec, settings_key
        self.answers: dict[tuple[str, int], str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash
                    continue
                if record.get("settings") == settings_key:
                    self.answers[(str(record["question_id"]), int(record["turn"]) - 1)] = record["answer"]
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, question: Question, turn: int, prompt: str, answer: str) -> None:
        self.answers[(question.question_id, turn)] = answer
        record = {
            "model": self.spec.label,
            "mode": self.spec.mode,
            "question_id": question.question_id,
            "turn": turn + 1,
            "prompt": prompt,
            "answer": answer,
            "settings": self.settings_key,
        }
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def conversation(self, question: Question) -> list[str] | None:
        """The model's answers to every turn of `question`, or None while some are missing."""
        answers = [self.answers.get((question.question_id, t)) for t in range(len(question.turns))]
        return None if any(a is None for a in answers) else answers  # type: ignore[return-value]


def generate_answers(
    spec: ModelSpec,
    questions: list[Question],
    store: AnswerStore,
    settings: GenerationSettings,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> int:
    """Fill `store` with the model's answers to every turn of every question; returns how many were generated."""
    missing = [q for q in questions if store.conversation(q) is None]
    if not missing:
        return 0
    import torch

    model, tokenizer = load_model(spec.path, device, trust_remote_code)
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop_ids = [tokenizer.eos_token_id]
    if spec.mode == "chat":
        inst = tokenizer.convert_tokens_to_ids("[INST]")
        if isinstance(inst, int) and inst != tokenizer.unk_token_id:
            stop_ids.append(inst)
    limit = getattr(model.config, "max_position_embeddings", None)
    generated = 0
    try:
        for turn in range(max(len(q.turns) for q in missing)):
            todo = [q for q in missing if turn < len(q.turns) and (q.question_id, turn) not in store.answers]
            for start in range(0, len(todo), settings.batch_size):
                batch = todo[start : start + settings.batch_size]
                prompts = [_prompt(spec, tokenizer, q, store, turn) for q in batch]
                answers = _generate_batch(model, tokenizer, prompts, settings, pad_id, stop_ids, limit, torch)
                for question, prompt, answer in zip(batch, prompts, answers, strict=True):
                    store.add(
                        question, turn, prompt, clean_base_answer(answer) if spec.mode == "base" else answer.strip()
                    )
                    generated += 1
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return generated


def _prompt(spec: ModelSpec, tokenizer: Any, question: Question, store: AnswerStore, turn: int) -> str:
    earlier = [store.answers[(question.question_id, t)] for t in range(turn)]
    turns = question.turns[: turn + 1]
    if spec.mode == "chat":
        return tokenizer.apply_chat_template(chat_messages(turns, earlier), add_generation_prompt=True, tokenize=False)
    return (tokenizer.bos_token or "") + base_prompt(turns, earlier)


def _generate_batch(model, tokenizer, prompts, settings, pad_id, stop_ids, limit, torch) -> list[str]:
    # The prompts carry their own <s> (template or base_prompt): add no second one.
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if limit is not None and ids.shape[1] + settings.max_new_tokens > limit:
        keep = max(limit - settings.max_new_tokens, 1)
        logger.warning("A prompt is longer than %d tokens; its start is cut", keep)
        ids, mask = ids[:, -keep:], mask[:, -keep:]
    kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.temperature > 0}
    if settings.temperature > 0:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        torch.manual_seed(settings.seed)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            pad_token_id=pad_id,
            eos_token_id=stop_ids,
            **kwargs,
        )
    return tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)


__all__ = [
    "MODES",
    "AnswerStore",
    "GenerationSettings",
    "ModelSpec",
    "base_prompt",
    "chat_messages",
    "check_models",
    "clean_base_answer",
    "generate_answers",
    "load_model",
]
