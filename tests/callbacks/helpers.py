"""A tiny Wonton model, packed random-token batches and a real Trainer for the monitor tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

from wonton_hf.models.wonton.configuration_wonton import WontonConfig
from wonton_hf.models.wonton.modeling_wonton import WontonForCausalLM

VOCAB = 256
SEQ = 32


def tiny_model(attn: str = "sdpa", seed: int = 0, **overrides) -> WontonForCausalLM:
    torch.manual_seed(seed)
    config = WontonConfig.from_preset(
        "wonton-tiny",
        vocab_size=VOCAB,
        num_hidden_layers=2,
        max_position_embeddings=64,
        attn_implementation=attn,
        **overrides,
    )
    return WontonForCausalLM(config)


def packed_batch(batch: int = 2, seed: int = 1, split: int = 13) -> dict[str, torch.Tensor]:
    """Rows of two documents each (positions restart at `split`), like the packer emits."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (batch, SEQ), generator=generator)
    positions = torch.cat([torch.arange(split), torch.arange(SEQ - split)]).expand(batch, SEQ)
    return {"input_ids": ids, "labels": ids.clone(), "position_ids": positions.clone()}


class RandomTokens(torch.utils.data.Dataset):
    """Random packed rows, the same for the same index (faults are injected at the model, see FaultInjector)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in packed_batch(1, seed=1000 + index).items()}


def training_args(out: Path, **overrides) -> TrainingArguments:
    options = dict(
        output_dir=str(out),
        max_steps=6,
        per_device_train_batch_size=2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
        data_seed=0,
    )
    options.update(overrides)
    return TrainingArguments(**options)


def trainer(model, args: TrainingArguments, dataset=None) -> Trainer:
    return Trainer(model=model, args=args, train_dataset=dataset if dataset is not None else RandomTokens())


def events() -> tuple[SimpleNamespace, TrainerState, TrainerControl]:
    """Arguments for driving a callback by hand, as the Trainer would."""
    return SimpleNamespace(average_tokens_across_devices=False), TrainerState(), TrainerControl()
