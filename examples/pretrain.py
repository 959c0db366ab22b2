"""Pretrain a Wonton model with the HF Trainer, the Online Data Scheduler and the paper's monitors.

    accelerate launch examples/pretrain.py                                   # embedded CPU demo (minutes)
    accelerate launch examples/pretrain.py --config examples/configs/runs/wonton-1b.yaml
    accelerate launch --config_file examples/configs/accelerate/deepspeed_zero2.yaml \
        examples/pretrain.py --config examples/configs/runs/wonton-7b.yaml train.max_steps=1000
    ... --resume never | --resume outputs/<run>/checkpoint-500          # default: newest complete checkpoint

Positional `section.key=value` arguments override the YAML (e.g. `train.max_steps=50 data.seq_len=512`).
"""

import argparse
import logging
from pathlib import Path

from wonton_hf.training import build_trainer, load_run_config, print_next_steps, run, shutdown

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "runs" / "wonton-tiny-cpu.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="run YAML (default: the embedded CPU demo)")
    parser.add_argument("--resume", help="auto | never | a checkpoint directory (overrides the YAML's `resume`)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = args.overrides + ([f"resume={args.resume}"] if args.resume else [])
    config = load_run_config(args.config, overrides)
    prepared = build_trainer(config)
    final = run(prepared)
    print_next_steps(final, config)
    shutdown()


if __name__ == "__main__":
    main()
