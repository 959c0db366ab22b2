"""Runs examples/pretrain.py's job in a subprocess for the tests, optionally killing itself with SIGKILL
(kill -9: no handler, no cleanup, exactly what an OOM killer or a lost node does) at a given step, writing
each finished step to a file (`--progress=FILE`, rank 0) so that a test can send a real signal mid-run, or
recording what the model trained on (`--record=DIR`, every rank: see `Record`)."""

import json
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


class Record(TrainerCallback):
    """Writes, per rank, into `folder`: every training micro-batch the model receives (`windows-rank{r}.jsonl`:
    the optimizer step it belongs to, `input_ids`, `source_ids`), appended as it happens so that a killed run
    leaves its record; the SpikeGuard state and step the run starts from (`begin-rank{r}.json`, after the
    Trainer and the callbacks restored a checkpoint); the log history at the end (`end-rank{r}.json`)."""

    def __init__(self, folder: str, trainer) -> None:
        self.folder = folder
        self.trainer = trainer
        self.rank = int(os.environ.get("RANK", "0"))
        os.makedirs(folder, exist_ok=True)

    def _write(self, name: str, payload: dict) -> None:
        with open(os.path.join(self.folder, f"{name}-rank{self.rank}.json"), "w") as handle:
            json.dump(payload, handle)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # prepended: DataSchedulerCallback's own pre-hook takes `source_ids` off the batch
        model.register_forward_pre_hook(self._batch, with_kwargs=True, prepend=True)
        guards = [cb for cb in self.trainer.callback_handler.callbacks if type(cb).__name__ == "SpikeGuard"]
        guard = guards[0].state_dict() if guards else None
        self._write("begin", {"global_step": state.global_step, "spike_guard": guard})

    def _batch(self, module, args, kwargs):
        if module.training and "source_ids" in kwargs:
            step = self.trainer.state.global_step + 1
            row = {"step": step, "input_ids": kwargs["input_ids"].tolist(), "source_ids": kwargs["source_ids"].tolist()}
            with open(os.path.join(self.folder, f"windows-rank{self.rank}.jsonl"), "a") as handle:
                handle.write(json.dumps(row) + "\n")
        return args, kwargs

    def on_train_end(self, args, state, control, **kwargs):
        self._write("end", {"global_step": state.global_step, "log_history": state.log_history})


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    argv = sys.argv[1:]
    kill_at = None
    if argv and argv[0].startswith("--kill-at="):
        kill_at = int(argv.pop(0).split("=", 1)[1])
    progress = None
    if argv and argv[0].startswith("--progress="):
        progress = argv.pop(0).split("=", 1)[1]
    record = None
    if argv and argv[0].startswith("--record="):
        record = argv.pop(0).split("=", 1)[1]
    config_path, overrides = argv[0], argv[1:]
    prepared = build_trainer(load_run_config(config_path, overrides))
    if record is not None:
        prepared.trainer.add_callback(Record(record, prepared.trainer))
    if kill_at is not None:
        prepared.trainer.add_callback(KillAt(kill_at))
    if progress is not None:
        prepared.trainer.add_callback(Progress(progress))
    run(prepared)
    shutdown()


if __name__ == "__main__":
    main()
