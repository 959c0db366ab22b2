"""Talking to a chat model in a terminal: history, the `[INST]` template, tokens streamed as they come.

`ChatSession` holds the model, the tokenizer and the conversation; `chat_loop` reads user lines from any
text stream and writes the streamed replies to another, so the same loop serves a person at a terminal,
a pipe (`echo hi | wonton-hf chat DIR`) and the tests (a pseudo-terminal). Generation is transformers'
`generate` with a `TextIteratorStreamer` on a worker thread: the caller writes each decoded piece as
soon as the streamer yields it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TextIteratorStreamer,
)

from .template import INST_OPEN, install_chat_template

logger = logging.getLogger(__name__)

COMMANDS_HELP = "/reset clears the conversation, /exit (or Ctrl-D) quits"


@dataclass
class SamplingOptions:
    temperature: float = 0.7
    """0 decodes greedily"""
    top_p: float = 0.9
    max_new_tokens: int = 256
    seed: int | None = None

    def validate(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"`--temperature` must be >= 0 (0 = greedy), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`--top-p` must be in (0, 1], got {self.top_p}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"`--max-new-tokens` must be >= 1, got {self.max_new_tokens}.")

    def generate_kwargs(self) -> dict:
        if self.temperature == 0:
            return {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
        }


def load_chat_model(model_dir: str, trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a `save_pretrained` directory; a tokenizer without a template gets the Wonton one.

    A checkpoint that needs its own code is refused unless `trust_remote_code` (`--trust-remote-code`).
    """
    from ..remote_code import check_remote_code

    check_remote_code(model_dir, trust_remote_code, flag="--trust-remote-code")

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=trust_remote_code, dtype=dtype).to(device)
    model.eval()
    if not tokenizer.chat_template:
        logger.warning("%s has no chat template (a base model?); using the Wonton [INST] template", model_dir)
        install_chat_template(tokenizer, model)
    return model, tokenizer


@dataclass
class ChatSession:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    def reset(self) -> None:
        self.history = []

    def prompt_ids(self) -> torch.Tensor:
        """The conversation so far, rendered with the template; oldest turns dropped if it would not fit."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        while True:
            messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
            if limit is None or ids.shape[1] + self.sampling.max_new_tokens <= limit or len(self.history) <= 1:
                return ids
            self.history = self.history[2:]  # forget the oldest question and its answer

    def reply(self, text: str) -> Iterator[str]:
        """Add a user turn, yield the answer piece by piece, then record it in the history."""
        self.history.append({"role": "user", "content": text})
        ids = self.prompt_ids().to(self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        if self.sampling.seed is not None:
            torch.manual_seed(self.sampling.seed)
        kwargs = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            streamer=streamer,
            eos_token_id=self._stop_ids(),
            pad_token_id=self.tokenizer.pad_token_id,
            **self.sampling.generate_kwargs(),
        )
        errors: list[BaseException] = []
        worker = threading.Thread(target=self._generate, args=(kwargs, errors), daemon=True)
        worker.start()
        pieces = []
        for piece in streamer:
            pieces.append(piece)
            yield piece
        worker.join()
        if errors:
            self.history.pop()
            raise errors[0]
        self.history.append({"role": "assistant", "content": "".join(pieces).strip()})

    def _generate(self, kwargs: dict, errors: list[BaseException]) -> None:
        try:
            with torch.inference_mode():
                self.model.generate(**kwargs)
        except BaseException as error:  # surfaced in the caller's thread
            errors.append(error)
            kwargs["streamer"].end()

    def _stop_ids(self) -> list[int]:
        """`</s>`, and `[INST]`: a model that forgot to stop must not write the user's next turn."""
        ids = [self.tokenizer.eos_token_id]
        inst = self.tokenizer.convert_tokens_to_ids(INST_OPEN)
        if isinstance(inst, int) and inst != self.tokenizer.unk_token_id:
            ids.append(inst)
        return ids


def chat_loop(session: ChatSession, stdin: TextIO, stdout: TextIO, interactive: bool) -> int:
    """Read user turns line by line until /exit or end of input; stream each reply to `stdout`."""
    if interactive:
        stdout.write(f"Chatting with the model ({COMMANDS_HELP}).\n")
    while True:
        if interactive:
            stdout.write("\n>>> ")
            stdout.flush()
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            session.reset()
            if interactive:
                stdout.write("(conversation cleared)\n")
            continue
        for piece in session.reply(text):
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        stdout.flush()
    return 0


def answer_once(session: ChatSession, prompt: str, stdout: TextIO) -> int:
    """`--prompt`: one question, the streamed answer, exit."""
    if not prompt.strip():
        raise ValueError("`--prompt` is empty; give the question text (or `-` to read it from stdin).")
    for piece in session.reply(prompt):
        stdout.write(piece)
        stdout.flush()
    stdout.write("\n")
    stdout.flush()
    return 0


__all__ = ["COMMANDS_HELP", "ChatSession", "SamplingOptions", "answer_once", "chat_loop", "load_chat_model"]
