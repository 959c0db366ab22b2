"""EXP3 loss feedback rewarding the held-out loss: one update per evaluation, none from the training steps."""

from __future__ import annotations

from types import SimpleNamespace

from wonton_hf.data import DataSource, OnlineDataScheduler
from wonton_hf.data.callbacks import DataSchedulerCallback, MixtureFeedbackCallback
from wonton_hf.data.mixture import Exp3Feedback


def test_held_out_losses_drive_exp3_at_each_evaluation(corpus, tokenizer):
    sources = [DataSource(name=n, paths=[str(p) for p in corpus[n]]) for n in ("en", "de")]
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=64)
    held_out = SimpleNamespace(last_losses={"en": 2.0, "de": 6.0, "extra-eval-set": 9.0})
    feedback = MixtureFeedbackCallback(DataSchedulerCallback(scheduler), Exp3Feedback(), held_out=held_out)
    state = SimpleNamespace(global_step=1)
    feedback.on_step_end(None, state, None)
    assert not scheduler.controller.pending  # the training loss is not the reward
    for _ in range(3):  # EXP3's first update is its uniform exploration floor
        feedback.on_evaluate(None, state, None, metrics={})
    assert feedback.last_losses == {"en": 2.0, "de": 6.0}  # only the mixture's sources
    changes = scheduler.controller.pending
    assert len(changes) == 3 and all(c["kind"] == "feedback" for c in changes)
    assert changes[-1]["multipliers"]["de"] > changes[-1]["multipliers"]["en"]  # the harder held-out source gains
