"""Runs examples/pretrain.py's job in a subprocess for the tests, optionally killing itself with SIGKILL
(kill -9: no handler, no cleanup, exactly what an OOM killer or a lost node does) at a given step."""

import logging
import os
import signal
import sys

from transformers import TrainerCallback

from wonton_hf.training import build_trainer, load_run_config, run, shutdown


class KillAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    argv = sys.argv[1:]
    kill_at = None
    if argv and argv[0].startswith("--kill-at="):
        kill_at = int(argv.pop(0).split("=", 1)[1])
    config_path, overrides = argv[0], argv[1:]
    prepared = build_trainer(load_run_config(config_path, overrides))
    if kill_at is not None:
        prepared.trainer.add_callback(KillAt(kill_at))
    run(prepared)
    shutdown()


if __name__ == "__main__":
    main()
