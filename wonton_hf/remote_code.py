"""Remote code only by explicit consent: one check for every place the package loads a model (eval, chat, SFT).

A checkpoint's `config.json` may declare `auto_map`: Python files shipped with it that transformers imports
and runs when `trust_remote_code=True`. Pointed at any hub repository, that runs the repository's code, so
transformers makes it an opt-in and so do we: `--trust-remote-code` (or `model.trust_remote_code: true`) is
off by default, and a checkpoint that needs code fails before anything is downloaded or loaded, with a
message naming the flag. Wonton checkpoints carry `auto_map` too (so they load where wonton_hf is not
installed) but need no remote code here: `import wonton_hf` registers their classes with the Auto classes.
"""

from __future__ import annotations

from typing import Any


class RemoteCodeRequired(ValueError):
    """The checkpoint's model type is only available as code shipped with it, and no consent was given."""


def read_model_config(model: str) -> dict[str, Any]:
    """The checkpoint's config.json as a dict (local directory or hub), without importing any of its code."""
    import transformers

    try:
        config, _ = transformers.PretrainedConfig.get_config_dict(model)
    except OSError as error:
        raise FileNotFoundError(f"Cannot read the config.json of {model!r}: {error}") from None
    return config


def needs_remote_code(config: dict[str, Any]) -> bool:
    """True when loading needs the checkpoint's own code: `auto_map` for a model type transformers does not know
    (Wonton's is known once `wonton_hf` is imported)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return bool(config.get("auto_map")) and config.get("model_type") not in CONFIG_MAPPING


def check_remote_code(model: str, trust_remote_code: bool, flag: str = "--trust-remote-code") -> dict[str, Any]:
    """Refuse a checkpoint that needs its own code unless `trust_remote_code`; returns its config dict."""
    config = read_model_config(model)
    if not trust_remote_code and needs_remote_code(config):
        files = sorted(
            {str(v).split(".")[0] + ".py" for v in (config.get("auto_map") or {}).values() if isinstance(v, str)}
        )
        raise RemoteCodeRequired(
            f"{model} needs code shipped with it to load (model type {config.get('model_type')!r} is not in "
            f"transformers; auto_map -> {', '.join(files) or 'its files'}). Running it executes that code on this "
            f"machine: pass `{flag}` only if you trust its source."
        )
    return config
