"""Fine-tune a Wonton model into the chat model (report section 4) with TRL's SFTTrainer.

    accelerate launch examples/sft.py                                   # embedded CPU demo (a couple of minutes)
    accelerate launch examples/sft.py --model outputs/pretrain-demo/final
    accelerate launch --config_file examples/configs/accelerate/deepspeed_zero2.yaml \
        examples/sft.py --config examples/configs/sft/wonton-7b-chat.yaml model.path=/ckpt/wonton-7b
    wonton-hf chat outputs/sft-demo/final                              # then talk to it

Positional `section.key=value` arguments override the YAML (e.g. `train.epochs=1 data.max_length=1024`).
The work is in `wonton_hf.chat.sft`: the `[INST]` template, answer-only loss, packing, the paper's optimizer
settings and the pretraining monitors, all on TRL's own SFTTrainer (no subclass).
"""

import argparse
import logging
import time
from pathlib import Path

from wonton_hf.chat.sft import build_sft_trainer, load_sft_config, run_sft
from wonton_hf.training import shutdown

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "sft" / "sft-tiny-cpu.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="SFT YAML (default: the embedded CPU demo)")
    parser.add_argument("--model", help="model directory to fine-tune (overrides `model.path`)")
    parser.add_argument("--resume", help="a checkpoint directory, or `auto` for the newest one in the run directory")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = args.overrides + ([f"model.path={args.model}"] if args.model else [])
    config = load_sft_config(args.config, overrides)
    start = time.perf_counter()
    prepared = build_sft_trainer(config)
    final = run_sft(prepared, resume_from=True if args.resume == "auto" else args.resume)
    if prepared.trainer.is_world_process_zero():
        print(f"\nDone in {time.perf_counter() - start:.0f} s. Fine-tuned from {prepared.model_origin}.\n"
              f"Data: {prepared.data_report.summary()}\n"
              f"Model and tokenizer (with the [INST] chat template): {final}\n"
              f"  wonton-hf chat {final}\n"
              f"  tensorboard --logdir {config.run_dir / 'runs'}")
    shutdown()


if __name__ == "__main__":
    main()
