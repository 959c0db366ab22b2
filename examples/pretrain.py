"""Pretrain a Wonton model with the HF Trainer, the Online Data Scheduler and the paper's monitors.

    accelerate launch examples/pretrain.py                                   # embedded CPU demo (minutes)
    accelerate launch examples/pretrain.py --config examples/configs/runs/wonton-1b.yaml
    accelerate launch --config_file examples/configs/accelerate/deepspeed_zero2.yaml \
        examples/pretrain.py --config examples/configs/runs/wonton-7b.yaml train.max_steps=1000
    python examples/pretrain.py --launch examples/configs/accelerate/multi_cpu.yaml ...   # check, then launch
    ... --resume never | --resume outputs/<run>/checkpoint-500          # default: newest complete checkpoint
    ... --help-config                                                   # every field, its doc and default
    ... --check                                                         # check the config and files only

Positional `section.key=value` arguments override the YAML (e.g. `train.max_steps=50 data.seq_len=512`).
A config error prints one message naming every bad field and exits with code 2 before anything is built.
"""

import sys
from pathlib import Path

from wonton_hf.training.config import load_run_config, run_config_help
from wonton_hf.training.entry import ScriptSpec, run_script

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "runs" / "wonton-tiny-cpu.yaml"


def train(config) -> None:
    from wonton_hf.training.pretrain import build_trainer, print_next_steps, run, shutdown

    final = run(build_trainer(config))
    print_next_steps(final, config)
    shutdown()


SPEC = ScriptSpec(
    script=__file__,
    description=__doc__,
    default_config=DEFAULT_CONFIG,
    load=load_run_config,
    help_config=run_config_help,
    check=lambda config: config.check_files(),
    train=train,
)

if __name__ == "__main__":
    sys.exit(run_script(SPEC))
