"""`train.float8`: refused where it cannot run (one message naming the field and the fix), trained where it can."""

import importlib.util

import pytest
import torch

from wonton_hf.training import ConfigError, build_trainer, load_run_config
from wonton_hf.training import float8 as float8_module
from wonton_hf.training.float8 import MIN_CAPABILITY, float8_problems

from .test_pretrain import DEMO, small


def test_config_rules_refuse_another_precision_and_the_cpu():
    with pytest.raises(ConfigError) as error:
        load_run_config(DEMO, ["train.float8={}", "train.precision=fp16", "train.use_cpu=true"])
    paths = [path for path, _ in error.value.problems]
    assert paths == ["train.float8", "train.float8"]
    assert "train.precision: bf16" in str(error.value) and "train.float8: null" in str(error.value)
    assert load_run_config(DEMO, ["train.float8.recipe=rowwise"]).train.float8.recipe == "rowwise"
    with pytest.raises(ConfigError, match=r"train\.float8\.recipe"):
        load_run_config(DEMO, ["train.float8.recipe=delayed"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal needs a machine without CUDA")
def test_build_trainer_refuses_float8_on_cpu_before_building_anything(tmp_path):
    config = load_run_config(DEMO, small(tmp_path, "train.float8={}"))
    with pytest.raises(ConfigError) as error:
        build_trainer(config)
    assert error.value.problems == [
        (
            "train.float8",
            "float8 matmuls need an NVIDIA GPU of compute capability >= 8.9 (H100/H200, L4/L40, RTX 4090, B200) and "
            "this process sees no CUDA device: set `train.float8: null` to train in bf16.",
        )
    ]
    assert not config.run_dir.exists()  # refused before the run directory, the tokenizer or the model


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a chosen capability, so the GPU-side refusals are checked on any machine."""
    state = {"capability": (9, 0), "torchao": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: state["capability"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake A100")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        float8_module.importlib.util,
        "find_spec",
        lambda name, *a: (object() if state["torchao"] else None) if name == "torchao" else find_spec(name, *a),
    )
    return state


def test_gpu_side_refusals(fake_gpu):
    section = object()
    assert float8_problems(None, None) == []
    assert float8_problems(section, None) == []  # capability 9.0 with torchao: accepted
    fake_gpu["capability"] = (8, 0)
    [(field, message)] = float8_problems(section, None)
    assert field == "train.float8" and "GPU 0 (Fake A100) has compute capability 8.0" in message
    assert "silently train in fp16" in message
    fake_gpu["capability"] = MIN_CAPABILITY
    assert float8_problems(section, None) == []
    fake_gpu["torchao"] = False
    assert float8_problems(section, None) == [
        (
            "train.float8",
            "needs torchao: `pip install 'wonton_hf[float8]'`, or set `train.float8: null` to train in bf16.",
        )
    ]
    assert "train.use_cpu is true" in float8_problems(section, True)[0][1]


def _float8_gpu() -> bool:
    return (
        torch.cuda.is_available()
        and torch.cuda.get_device_capability() >= MIN_CAPABILITY
        and importlib.util.find_spec("torchao") is not None
    )


@pytest.mark.gpu
@pytest.mark.skipif(not _float8_gpu(), reason="needs a CUDA GPU of capability >= 8.9 and torchao")
def test_float8_run_swaps_the_linears_and_trains(tmp_path):
    from torchao.float8.float8_linear import Float8Linear

    config = load_run_config(
        DEMO, small(tmp_path, "train.max_steps=3", "train.save_steps=3", "evaluation=null", "train.float8={}")
    )
    prepared = build_trainer(config)
    prepared.trainer.train()
    model = prepared.trainer.model
    swapped = [name for name, module in model.named_modules() if isinstance(module, Float8Linear)]
    # accelerate keeps the first linear (layer 0's qkv_proj) and the last (lm_head) in bf16
    assert "model.layers.1.mlp.up_proj" in swapped and "lm_head" not in swapped
    losses = [e["loss"] for e in prepared.trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
