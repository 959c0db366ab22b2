"""Fine-tune a Wonton model into the chat model (report section 4) with TRL's SFTTrainer.

    accelerate launch examples/sft.py                                   # embedded CPU demo (a couple of minutes)
    accelerate launch examples/sft.py --model outputs/pretrain-demo/final
    accelerate launch --config_file examples/configs/accelerate/deepspeed_zero2.yaml \
        examples/sft.py --config examples/configs/sft/wonton-7b-chat.yaml model.path=/ckpt/wonton-7b
    wonton-hf chat outputs/sft-demo/final                              # then talk to it
    ... --help-config | --check | --launch ACCELERATE_CONFIG | --resume auto

Positional `section.key=value` arguments override the YAML (e.g. `train.epochs=1 data.max_length=1024`).
A config error prints one message naming every bad field and exits with code 2 before anything is built.
The work is in `wonton_hf.chat.sft`: the `[INST]` template, answer-only loss, packing, the paper's optimizer
settings and the pretraining monitors, all on TRL's own SFTTrainer (no subclass).
"""

import sys
import time
from pathlib import Path

from wonton_hf.chat.config import load_sft_config, sft_config_help
from wonton_hf.training.entry import ScriptSpec, run_script

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "sft" / "sft-tiny-cpu.yaml"


def train(config) -> None:
    from wonton_hf.chat.sft import build_sft_trainer, run_sft
    from wonton_hf.distributed import shutdown

    start = time.perf_counter()
    prepared = build_sft_trainer(config)
    final = run_sft(prepared)
    if prepared.trainer.is_world_process_zero():
        print(
            f"\nDone in {time.perf_counter() - start:.0f} s. Fine-tuned from {prepared.model_origin}.\n"
            f"Data: {prepared.data_report.summary()}\n"
            f"Model and tokenizer (with the [INST] chat template): {final}\n"
            f"  wonton-hf chat {final}\n"
            f"  tensorboard --logdir {config.run_dir / 'runs'}"
        )
    shutdown()


SPEC = ScriptSpec(
    script=__file__,
    description=__doc__,
    default_config=DEFAULT_CONFIG,
    load=load_sft_config,
    help_config=sft_config_help,
    check=lambda config: config.check_files(),
    train=train,
    flags={
        "--model": ("model.path", "model directory to fine-tune (overrides `model.path`)"),
        "--resume": ("resume", "never | auto (the newest complete checkpoint) | a checkpoint directory"),
    },
)

if __name__ == "__main__":
    sys.exit(run_script(SPEC))
