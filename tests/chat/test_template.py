"""The [INST] chat template: the paper's string, the generation prompt, marker tokenisation, round trips."""

from __future__ import annotations

import copy

import pytest
from jinja2.exceptions import TemplateError
from transformers import AutoTokenizer
from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

from wonton_hf.chat.template import INST_CLOSE, INST_OPEN, format_conversation, install_chat_template

from .conftest import tiny_model
from .samples import CONVERSATIONS

ONE_TURN = [{"role": "user", "content": "Question"}, {"role": "assistant", "content": "Answer"}]


def test_one_turn_is_the_papers_format(chat_tokenizer):
    assert chat_tokenizer.apply_chat_template(ONE_TURN, tokenize=False) == "<s> [INST] Question [/INST] Answer </s>"


def test_multi_turn_and_system_prompt(chat_tokenizer):
    rendered = chat_tokenizer.apply_chat_template(CONVERSATIONS[1], tokenize=False)
    assert rendered == (
        "<s> [INST] <<SYS>>\nAntworte kurz.\n<</SYS>>\n\nWie heißt die Hauptstadt von Deutschland? [/INST] Berlin. </s>"
        " [INST] Und von Frankreich? [/INST] Paris, la capitale de la France. </s>"
    )
    for conversation in CONVERSATIONS:
        assert chat_tokenizer.apply_chat_template(conversation, tokenize=False) == format_conversation(conversation)


def test_generation_prompt_ends_with_inst_close(chat_tokenizer):
    prompt = CONVERSATIONS[1][:-1]
    rendered = chat_tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith(" [/INST]")
    ids = chat_tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
    assert ids[-1] == chat_tokenizer.convert_tokens_to_ids(INST_CLOSE)
    # The inference prompt is a prefix of the training text (TRL's prompt-completion masking relies on it).
    full = chat_tokenizer.apply_chat_template(CONVERSATIONS[1])["input_ids"]
    assert full[: len(ids)] == ids


def test_markers_are_single_tokens_in_every_context(chat_tokenizer):
    inst, close = (chat_tokenizer.convert_tokens_to_ids(t) for t in (INST_OPEN, INST_CLOSE))
    assert inst >= 512 and close >= 512  # added after the BPE vocabulary, never merged pieces
    for text in ("[INST]", " [INST] ", "x\n[INST]y", "。[INST]x", "<s> [INST]", "</s> [INST] hi"):
        ids = chat_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids.count(inst) == 1, text
    for text in ("a [/INST] b", "a\n[/INST]", "北京[/INST]", "?[/INST] x"):
        assert chat_tokenizer(text, add_special_tokens=False)["input_ids"].count(close) == 1, text
    # The words around a marker tokenise as if the marker were a text boundary: no stray space tokens.
    with_markers = chat_tokenizer.apply_chat_template(ONE_TURN)["input_ids"]
    question = chat_tokenizer("Question", add_special_tokens=False)["input_ids"]
    answer = chat_tokenizer("Answer", add_special_tokens=False)["input_ids"]
    assert with_markers == [chat_tokenizer.bos_token_id, inst, *question, close, *answer, chat_tokenizer.eos_token_id]


def test_saved_tokenizer_keeps_template_and_markers(tmp_path, chat_tokenizer):
    chat_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for conversation in CONVERSATIONS:
        assert (
            reloaded.apply_chat_template(conversation)["input_ids"]
            == chat_tokenizer.apply_chat_template(conversation)["input_ids"]
        )
    assert has_generation_markers(reloaded.chat_template)
    assert is_chat_template_stop_token_trained(reloaded)  # TRL's own check that </s> carries loss


def test_install_is_idempotent(chat_tokenizer):
    tokenizer = copy.deepcopy(chat_tokenizer)
    assert install_chat_template(tokenizer) == []  # already installed: nothing added
    base = copy.deepcopy(chat_tokenizer)
    base.chat_template = None
    model = tiny_model(base)
    assert model.get_input_embeddings().num_embeddings == len(base)
    vocab_before = len(base)
    install_chat_template(base, model)
    assert len(base) == vocab_before and base.chat_template  # markers existed: no resize needed
    assert model.get_input_embeddings().num_embeddings == vocab_before


def test_install_on_tokenizer_without_markers_resizes(tmp_path):
    from wonton_hf.tokenization import train_tokenizer

    from .samples import tokenizer_texts

    tokenizer = train_tokenizer(texts=tokenizer_texts(), vocab_size=384).tokenizer
    model = tiny_model(tokenizer)
    added = install_chat_template(tokenizer, model, pad_to_multiple_of=128)
    assert tokenizer.convert_ids_to_tokens(added) == [INST_OPEN, INST_CLOSE]
    assert added == [384, 385]
    assert model.get_input_embeddings().num_embeddings == 512  # rounded up to the 128 multiple
    assert model.get_output_embeddings().weight.shape[0] == 512 and model.config.vocab_size == 512


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": "hi"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "user", "content": ["not", "a", "string"]}],
        [{"role": "tool", "content": "x"}],
    ],
)
def test_template_rejects_malformed_conversations(chat_tokenizer, messages):
    with pytest.raises(TemplateError):
        chat_tokenizer.apply_chat_template(messages, tokenize=False)
