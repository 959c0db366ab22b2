"""Registering Wonton with transformers' Auto classes without importing transformers when `wonton_hf` is imported.

`import wonton_hf` must make `AutoModelForCausalLM.from_pretrained(<wonton dir>)` work, but importing torch and
transformers up front costs ~4 s on a CPU machine, which every CLI call (`wonton-hf --help`, a run config with a
typo) would pay before printing a line. So the registration waits until transformers' Auto machinery is
imported (`configuration_auto` or `modeling_auto`): the Auto classes cannot be used before that, so nothing can
observe the delay. It runs once the import in progress has finished, never in the middle of it: a transformers
module that imports `modeling_auto` at its top (`modeling_layers` does) is half-initialised at that moment,
and the Wonton model imports from it.

Mechanism: until the registration is done, a meta-path finder wraps the loader of every `transformers.*` and
`wonton_hf.*` module imported, counting modules in execution; when the count returns to zero and an Auto
module is loaded, `register()` runs. `register()` is idempotent and also called directly when the package's
public classes are first accessed.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

_AUTO_MODULES = ("transformers.models.auto.configuration_auto", "transformers.models.auto.modeling_auto")
_WATCHED = ("transformers", "wonton_hf")
_state = {"done": False, "executing": 0}


def register() -> None:
    """Register the Wonton config and models with the Auto classes and for code export (`auto_map`); once."""
    if _state["done"]:
        return
    _state["done"] = True
    _uninstall()
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .models.wonton import WontonConfig, WontonForCausalLM, WontonModel

    AutoConfig.register(WontonConfig.model_type, WontonConfig, exist_ok=True)
    AutoModel.register(WontonConfig, WontonModel, exist_ok=True)
    AutoModelForCausalLM.register(WontonConfig, WontonForCausalLM, exist_ok=True)
    WontonConfig.register_for_auto_class()
    WontonModel.register_for_auto_class("AutoModel")
    WontonForCausalLM.register_for_auto_class("AutoModelForCausalLM")


def _auto_loaded() -> bool:
    return any(name in sys.modules for name in _AUTO_MODULES)


class _CountingLoader(importlib.abc.Loader):
    """Delegates to the real loader; registers once the outermost watched import has finished."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        _state["executing"] += 1
        try:
            self._inner.exec_module(module)
        finally:
            _state["executing"] -= 1
        if not _state["done"] and _state["executing"] == 0 and _auto_loaded():
            register()

    def __getattr__(self, name: str) -> Any:  # get_source, get_data, is_package, get_resource_reader...
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if _state["done"] or name.partition(".")[0] not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CountingLoader(spec.loader)
                return spec
        return None


_FINDER = _Finder()


def _uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def install() -> None:
    """Register now if transformers' Auto classes are already imported, else as soon as they are."""
    if _state["done"]:
        return
    if _auto_loaded():
        register()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
