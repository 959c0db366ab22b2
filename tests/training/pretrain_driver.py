"""Runs examples/pretrain.py's job in a subprocess for the tests, optionally killing itself with SIGKILL
(kill -9: no handler, no cleanup, exactly what an OOM killer or a lost node does) at a given step, or writing
each finished step to a file (`--progress=FILE`, rank 0) so that a test can send a real signal mid-run."""

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


class Progress(TrainerCallback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            with open(self.path, "w") as handle:
                handle.write(str(state.global_step))


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    argv = sys.argv[1:]
    kill_at = None
    if argv and argv[0].startswith("--kill-at="):
        kill_at = int(argv.pop(0).split("=", 1)[1])
    progress = None
    if argv and argv[0].startswith("--progress="):
        progress = argv.pop(0).split("=", 1)[1]
    config_path, overrides = argv[0], argv[1:]
    prepared = build_trainer(load_run_config(config_path, overrides))
    if kill_at is not None:
        prepared.trainer.add_callback(KillAt(kill_at))
    if progress is not None:
        prepared.trainer.add_callback(Progress(progress))
    run(prepared)
    shutdown()


if __name__ == "__main__":
    main()
