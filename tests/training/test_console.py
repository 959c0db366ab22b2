"""One compact console line per log event; the data weights only when they change."""

from types import SimpleNamespace

from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from wonton_hf.training.console import ConsoleCallback, use_console


def _event(step, **extra):
    return {
        "loss": 2.5,
        "grad_norm": 0.75,
        "learning_rate": 3e-4,
        "throughput/tokens_per_s": 123456.0,
        "throughput/device/mfu": 0.412,
        "data/weight/en": 0.8,
        "data/weight/de": 0.2,
        "stability/z_loss": 1.0,
        "spike/skipped_total": 0.0,
        **extra,
    }


def test_one_line_with_the_numbers_a_person_follows():
    console = ConsoleCallback(show_bar=False)
    state = SimpleNamespace(global_step=10, max_steps=250)
    first = console.format(state, _event(10))
    assert first == (
        "step  10/250 | loss 2.5000 | lr 3.00e-04 | grad 0.750 | 123.5k tok/s | MFU 41.2% | mix en 0.8 de 0.2"
    )
    assert "mix" not in console.format(state, _event(20))  # unchanged weights are not repeated
    changed = console.format(state, _event(30, **{"data/weight/en": 0.7, "data/weight/de": 0.3, "spike/skip": 1.0}))
    assert changed.endswith("spike: skip | mix en 0.7 de 0.3")
    assert (
        console.format(state, {"train_runtime": 125.2, "train_loss": 2.25})
        == "finished: 10 steps in 2m05s, mean loss 2.2500"
    )
    assert console.format(state, {"total_flos": 1.0}) is None


def test_use_console_replaces_the_printing_callbacks(tmp_path):
    import torch

    for disable in (False, True):
        args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=disable)
        trainer = Trainer(model=torch.nn.Linear(2, 2), args=args)
        console = use_console(trainer)
        printers = [
            cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback | PrinterCallback)
        ]
        assert printers == [console] and console.show_bar is not disable
