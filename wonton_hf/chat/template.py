"""The chat format of the Wonton report (section 4): `<s> [INST] Question [/INST] Answer </s>`.

Rendering, for a conversation with an optional system prompt and several turns:

    <s> [INST] <<SYS>>\\nSYSTEM\\n<</SYS>>\\n\\nQ1 [/INST] A1 </s> [INST] Q2 [/INST] A2 </s>

- One `<s>` per conversation; every user turn is `[INST] ... [/INST]`, every answer ends with `</s>`.
- The system prompt (the report has none) goes inside the first `[INST]`, wrapped in Llama 2's
  `<<SYS>>` / `<</SYS>>` lines: the same [INST] family of formats, so models and tools that know Llama 2
  read it; it is not a separate turn and carries no loss.
- `{% generation %}` covers each answer and its `</s>`, so TRL's `assistant_only_loss=True` trains
  exactly the answer tokens and the stop token, never the question or the markers.
- The generation prompt is the `[/INST]` that closes the last user turn: the format has no assistant
  header, so `add_generation_prompt=True` renders the same text as without it, and a prompt rendered for
  inference is always a prefix of the training text (what TRL's prompt-completion masking relies on).

Why `[INST]` and `[/INST]` are added special tokens (as in Mistral's v3 tokenizers) rather than text:
as text they would be cut by the BPE pre-tokenizer into pieces whose split depends on the character
before them (`" ["` after a space, `"["` after a newline), so the model would see different ids for the
same marker. As added tokens they are one id each, everywhere, and `decode(skip_special_tokens=True)`
drops them. `lstrip`/`rstrip` on them (and `lstrip` on `</s>`) absorb the spaces of the paper's notation,
so the rendered string is the paper's format while the ids carry no stray space tokens: the first word of
a question or answer is tokenised as a text-initial word both in training and at inference.
Cost: text that literally contains `[INST]` is read as the marker (as with every control-token format).
"""

from __future__ import annotations

import logging
import os

from tokenizers import AddedToken
from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

INST_OPEN = "[INST]"
INST_CLOSE = "[/INST]"
SYSTEM_OPEN = "<<SYS>>\n"
SYSTEM_CLOSE = "\n<</SYS>>\n\n"
CHAT_MARKERS = (INST_OPEN, INST_CLOSE)

CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = none -%}{%- set turns = messages -%}{%- endif -%}"
    "{{- bos_token -}}"
    "{%- for message in turns -%}"
    "{%- if message['content'] is not string -%}"
    "{{- raise_exception('Wonton chat template: every message content must be a string') -}}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('Wonton chat template: roles must alternate user/assistant/user/... after an optional system message') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- ' [INST] ' -}}"
    "{%- if loop.first and system -%}{{- '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' -}}{%- endif -%}"
    "{{- message['content'] + ' [/INST]' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- ' ' -}}{%- generation -%}{{- message['content'] + ' ' + eos_token -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- raise_exception('Wonton chat template: unknown role ' + message['role'] + '; use system, user or assistant') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)
"""Jinja, saved as `chat_template` in tokenizer_config.json. `add_generation_prompt` adds nothing: see the module
docstring. Errors (wrong alternation, unknown role, non-string content) raise through `raise_exception`."""


def format_conversation(messages: list[dict[str, str]], bos: str = "<s>", eos: str = "</s>") -> str:
    """The paper's string for a conversation, written without Jinja: the reference the template is tested against."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    text = bos
    for i, message in enumerate(turns):
        if message["role"] == "user":
            prefix = f"{SYSTEM_OPEN}{system}{SYSTEM_CLOSE}" if i == 0 and system else ""
            text += f" {INST_OPEN} {prefix}{message['content']} {INST_CLOSE}"
        else:
            text += f" {message['content']} {eos}"
    return text


def install_chat_template(
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel | None = None,
    pad_to_multiple_of: int = 128,
) -> list[int]:
    """Give any fast tokenizer the Wonton chat format; grow `model`'s embeddings if tokens were added.

    Adds `[INST]` / `[/INST]` as special tokens (if missing), makes `</s>` absorb the space before it, and
    sets `chat_template`. Idempotent. The model's vocabulary is rounded up to `pad_to_multiple_of` (the
    report's 139,776 = 1092 x 128 layout); new rows are initialised by transformers' mean-resizing.
    Returns the ids of the tokens that were added.
    """
    if not tokenizer.is_fast:
        raise ValueError(
            f"install_chat_template: {type(tokenizer).__name__} is a slow tokenizer; the assistant mask needs "
            "character offsets, which only fast tokenizers (`PreTrainedTokenizerFast`) provide. Load it with use_fast=True."
        )
    for name in ("bos_token", "eos_token"):
        if getattr(tokenizer, name, None) is None:
            raise ValueError(
                f"install_chat_template: the tokenizer has no `{name}`; the Wonton format needs <s> and </s>."
            )
    vocab = tokenizer.get_vocab()
    new = [t for t in CHAT_MARKERS if t not in vocab]
    markers = [AddedToken(t, special=True, normalized=False, lstrip=True, rstrip=True) for t in CHAT_MARKERS]
    eos = AddedToken(tokenizer.eos_token, special=True, normalized=False, lstrip=True)
    # Re-registering existing tokens updates their strip flags (a tokenizer saved before this call has none).
    tokenizer.add_special_tokens(
        {"eos_token": eos, "extra_special_tokens": markers}, replace_extra_special_tokens=False
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    added = [tokenizer.convert_tokens_to_ids(t) for t in new]
    if model is not None:
        resize_for_tokenizer(model, tokenizer, pad_to_multiple_of)
    if added:
        logger.info("Added chat tokens %s with ids %s", new, added)
    return added


def resize_for_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int) -> None:
    """Grow the embedding and output head when the tokenizer outgrew them (never shrink: ids stay valid)."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of)


def save_chat_template(tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> None:
    """Write the template as a standalone `.jinja` file (TRL's `chat_template_path` and other tools read it)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(tokenizer.chat_template or CHAT_TEMPLATE)


__all__ = [
    "CHAT_MARKERS",
    "CHAT_TEMPLATE",
    "INST_CLOSE",
    "INST_OPEN",
    "format_conversation",
    "install_chat_template",
    "resize_for_tokenizer",
    "save_chat_template",
]
