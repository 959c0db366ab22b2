"""wonton_hf: the Wonton 7B training system (arXiv 2404.15702) on the Hugging Face stack.

Importing the package registers `WontonConfig` with `AutoConfig` and the models with `AutoModel` /
`AutoModelForCausalLM`, and marks them for `save_pretrained` to export their code (`auto_map`), so a
saved directory also loads with `trust_remote_code=True` where `wonton_hf` is not installed.

The import itself is light (no torch, no transformers): the registration happens as soon as transformers'
Auto classes are imported (`_auto_registration`), and the model classes load on first access. That keeps
`wonton-hf --help` and run-config errors well under two seconds.
"""

from typing import Any

from . import _auto_registration

__version__ = "0.1.0"

_MODEL_NAMES = (
    "WONTON_PRESETS",
    "WontonCausalLMOutputWithPast",
    "WontonConfig",
    "WontonForCausalLM",
    "WontonModel",
    "WontonPreTrainedModel",
)

_auto_registration.install()


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from .models import wonton

        _auto_registration.register()
        return getattr(wonton, name)
    raise AttributeError(f"module 'wonton_hf' has no attribute {name!r}")


__all__ = [*_MODEL_NAMES, "__version__"]
