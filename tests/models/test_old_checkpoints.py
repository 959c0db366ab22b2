"""Directories exported by an older wonton_hf: what loads them, and refreshing the code they carry."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from wonton_hf import WontonForCausalLM
from wonton_hf.models.wonton import refresh_code

from .test_modeling_wonton import tiny_model, tokens

PACKAGE_CODE = Path(refresh_code.__file__).resolve().parent


def _old_directory(tmp_path: Path) -> Path:
    """A saved model whose code files are not this package's (as if written by an older version); the stale
    modeling file fails on import, so any use of it shows."""
    directory = tmp_path / "old"
    tiny_model().save_pretrained(directory)
    (directory / "modeling_wonton.py").write_text("raise ImportError('stale modeling_wonton.py was used')\n")
    return directory


def test_installed_package_loads_an_old_directory_without_its_code(tmp_path):
    directory = _old_directory(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    assert type(model) is WontonForCausalLM  # the installed class, not the directory's copy
    prompt = tokens(1, 5)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(
        model.generate(prompt, use_cache=True, **kwargs), model.generate(prompt, use_cache=False, **kwargs)
    )


def test_refresh_rewrites_the_code_and_remote_code_generates_correctly(tmp_path):
    directory = _old_directory(tmp_path)
    assert refresh_code.main([str(directory)]) == 0
    for name in refresh_code.CODE_FILES:
        assert (directory / name).read_bytes() == (PACKAGE_CODE / name).read_bytes()
    script = textwrap.dedent(f"""
        import sys
        sys.modules["wonton_hf"] = None  # as on a machine without the package
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        prompt = torch.tensor([[5, 17, 33, 99, 120]])
        kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert torch.equal(model.generate(prompt, use_cache=True, **kwargs), model.generate(prompt, use_cache=False, **kwargs))
        print("remote-generate-ok")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "remote-generate-ok" in result.stdout, result.stderr[-3000:]
