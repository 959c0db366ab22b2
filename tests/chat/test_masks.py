"""Answer-only loss, token by token, on the batches TRL's SFTTrainer actually trains on (packed and not).

The expected labels are built without the template's generation markers: each conversation is assembled
from separately tokenised pieces (`<s>`, `[INST]`, question, `[/INST]`, answer, `</s>`), and exactly the
answer pieces and their `</s>` keep their ids; everything else must be -100.
"""

from __future__ import annotations

import pytest
import torch
from trl import SFTTrainer

from wonton_hf.chat.formats import ChatSource, build_chat_dataset
from wonton_hf.chat.sft import SFTRunConfig, build_sft_config
from wonton_hf.chat.template import INST_CLOSE, INST_OPEN, SYSTEM_CLOSE, SYSTEM_OPEN

from .conftest import tiny_model
from .samples import CONVERSATIONS


def expected_ids_and_labels(tokenizer, messages):
    def text(s):
        return tokenizer(s, add_special_tokens=False)["input_ids"]

    inst, close = tokenizer.convert_tokens_to_ids(INST_OPEN), tokenizer.convert_tokens_to_ids(INST_CLOSE)
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    ids, labels = [tokenizer.bos_token_id], [-100]
    for i, message in enumerate(m for m in messages if m["role"] != "system"):
        if message["role"] == "user":
            prefix = f"{SYSTEM_OPEN}{system}{SYSTEM_CLOSE}" if i == 0 and system else ""
            piece = [inst, *text(prefix + message["content"]), close]
            ids += piece
            labels += [-100] * len(piece)
        else:
            piece = [*text(message["content"]), tokenizer.eos_token_id]
            ids += piece
            labels += piece
    return ids, labels


def sft_trainer(tmp_path, tokenizer, messages_file, packing: bool) -> SFTTrainer:
    config = SFTRunConfig(output_dir=str(tmp_path))
    config.data.max_length, config.data.packing = 256, packing
    config.train.per_device_batch_size = config.train.global_batch_size = 3
    config.train.report_to = []
    dataset, _ = build_chat_dataset([ChatSource("chat", "messages", str(messages_file))])
    return SFTTrainer(
        model=tiny_model(tokenizer), args=build_sft_config(config), train_dataset=dataset, processing_class=tokenizer
    )


def conversations_in(batch) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of every conversation in a collated batch, padded or padding-free."""
    found = []
    if "attention_mask" in batch:
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            n = int(mask.sum())
            assert (labels[n:] == -100).all()  # padding never carries loss
            found.append((ids[:n].tolist(), labels[:n].tolist()))
    else:
        assert batch["input_ids"].shape[0] == 1
        bounds = batch["cu_seq_lens_q"].tolist()
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            found.append((batch["input_ids"][0, start:end].tolist(), batch["labels"][0, start:end].tolist()))
    return found


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_exactly_answers_and_their_eos_carry_labels(tmp_path, chat_tokenizer, messages_file, packing):
    trainer = sft_trainer(tmp_path, chat_tokenizer, messages_file, packing)
    assert trainer.padding_free is packing
    expected = {
        tuple(ids): labels for ids, labels in (expected_ids_and_labels(chat_tokenizer, m) for m in CONVERSATIONS)
    }
    seen = []
    rows_with_several = 0
    for batch in trainer.get_train_dataloader():
        found = conversations_in(batch)
        rows_with_several += packing and len(found) > 1
        for ids, labels in found:
            assert tuple(ids) in expected, chat_tokenizer.decode(ids)
            assert labels == expected[tuple(ids)], chat_tokenizer.decode(ids)
            seen.append(tuple(ids))
    assert sorted(seen) == sorted(expected)  # every conversation once, none truncated or dropped
    if packing:
        assert rows_with_several  # conversations really share rows
        assert "position_ids" in batch and "attention_mask" not in batch


def test_multi_turn_labels_cover_every_answer(chat_tokenizer):
    ids, labels = expected_ids_and_labels(chat_tokenizer, CONVERSATIONS[3])
    trained = [i for i, label in zip(ids, labels, strict=True) if label != -100]
    eos = chat_tokenizer.eos_token_id
    assert trained.count(eos) == 3  # three answers, each with its </s>
    answers = chat_tokenizer.decode([t for t in trained if t != eos])
    assert answers == "La biblioteca abre a las nueve.La biblioteca apre alle nove.図書館は九時に開きます。"
    # And the template's own mask agrees with this independent construction.
    rendered = chat_tokenizer.apply_chat_template(CONVERSATIONS[3], return_dict=True, return_assistant_tokens_mask=True)
    assert rendered["input_ids"] == ids
    assert [label != -100 for label in labels] == [bool(m) for m in rendered["assistant_masks"]]


def test_packed_rows_never_attend_across_conversations(tmp_path, chat_tokenizer, messages_file):
    """Position ids restart per conversation, so the Wonton model's logits per conversation match a lone run."""
    trainer = sft_trainer(tmp_path, chat_tokenizer, messages_file, packing=True)
    model = trainer.model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        bounds = batch["cu_seq_lens_q"].tolist()
        start, end = bounds[-2], bounds[-1]
        alone = model(input_ids=batch["input_ids"][:, start:end]).logits[0]
    torch.testing.assert_close(packed[start:end], alone, atol=1e-4, rtol=1e-4)
