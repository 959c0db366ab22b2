"""The machinery of the run configs: typed sections, YAML and `key=value` reading, one error for every problem.

Pretraining (`training/config.py`) and SFT (`chat/sft.py`) build their run configs from the sections here.
Every section is a pydantic model that forbids unknown keys; each field keeps its docstring (pydantic reads
them as descriptions, which `--help-config` prints). Validation runs before torch or transformers is
imported: this module imports neither, and the option classes a config mirrors (the monitors' options,
`DataSource`, `Exp3Feedback`, `ChatSource`, the model's architecture fields) live in torch-free modules, so
their sections are built from the classes themselves (`section_from_dataclass`) and their rules are the
classes' own `problems()`.

Errors: every problem in a config is collected into one `ConfigError` that names each field by its path
(`data.sources[2].weight`), what it got and what it accepts; the entry points print it and exit with 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.json_schema import GenerateJsonSchema

EXIT_CONFIG_ERROR = 2
"""Exit code of an entry point whose run config is invalid (argparse's code for a usage error)."""


class ConfigError(ValueError):
    """Every problem of a run config at once; `problems` holds (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "run config") -> None:
        self.problems = problems
        self.source = source
        lines = [f"  {path}: {message}" if path else f"  {message}" for path, message in problems]
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"Invalid {source} ({count}):\n" + "\n".join(lines))


class Section(BaseModel):
    """A config section: unknown keys are errors, field docstrings are the documentation."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


# ---- YAML that reads 1e-3 as a number ----


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where a float needs a dot (`1e-3` is a string); YAML 1.2 and every user read
    `1e-3` as a number, so the float resolver here is YAML 1.2's."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first, _resolvers in _Loader.yaml_implicit_resolvers.items():
    _resolvers[:] = [(tag, rx) for tag, rx in _resolvers if tag != "tag:yaml.org,2002:float"]
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml_file(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([("", f"{what} file {path} does not exist.")], what)
    try:
        values = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError([("", f"{path} is not valid YAML: {error}")], what) from None
    if not isinstance(values, dict):
        raise ConfigError([("", f"{path} must hold a mapping of sections, got {type(values).__name__}.")], what)
    return values


_INDEXED = re.compile(r"^([A-Za-z_][\w-]*)((?:\[\d+\])*)$")


def _steps(dotted: str) -> list[str | int] | None:
    """`data.sources[2].weight` -> ["data", "sources", 2, "weight"]; None if malformed."""
    steps: list[str | int] = []
    for part in dotted.split("."):
        match = _INDEXED.match(part)
        if not match:
            return None
        steps.append(match.group(1))
        steps += [int(i) for i in re.findall(r"\d+", match.group(2))]
    return steps


def apply_overrides(values: dict[str, Any], overrides: list[str], what: str = "run config") -> dict[str, Any]:
    """`train.max_steps=50 optimizer.learning_rate=1e-3 data.sources[2].weight=0.5`: values read as YAML."""
    problems = override_problems(values, overrides)
    if problems:
        raise ConfigError(problems, what)
    return values


def override_problems(values: dict[str, Any], overrides: list[str]) -> list[tuple[str, str]]:
    """Apply the overrides that fit into `values` (in place); return the ones that do not, as problems."""
    problems = []
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        steps = _steps(dotted) if sep else None
        if not steps:
            problems.append(
                ("", f"override {item!r} must look like `section.key=value` (lists: `key[2].field=value`).")
            )
            continue
        try:
            value = load_yaml(raw)
        except yaml.YAMLError:
            value = raw
        node: Any = values
        for step, following in zip(steps, steps[1:], strict=False):
            container_ok = isinstance(node, dict) if isinstance(step, str) else isinstance(node, list)
            if isinstance(step, int) and container_ok and step >= len(node):
                container_ok = False
            if not container_ok:
                node = None
                break
            if isinstance(step, str) and step not in node:
                node[step] = [] if isinstance(following, int) else {}
            node = node[step]
        leaf = steps[-1]
        if isinstance(leaf, str) and isinstance(node, dict):
            node[leaf] = value
        elif isinstance(leaf, int) and isinstance(node, list) and leaf < len(node):
            node[leaf] = value
        else:
            where = format_path(tuple(steps[:-1]))
            problems.append(
                (
                    format_path(tuple(steps)),
                    f"override {item!r}: `{where}` is not a section or list that holds this entry.",
                )
            )
    return problems


# ---- error messages ----


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(annotation: Any) -> Any:
    """The model class inside `X | None`, `list[X]`, `dict[str, X]`, if any."""
    while True:
        origin = get_origin(annotation)
        if origin in (Union, types.UnionType):
            inner = [a for a in get_args(annotation) if a is not type(None)]
            annotation = inner[0] if len(inner) == 1 else annotation
            if len(inner) != 1:
                return annotation
        elif origin in (list, tuple, dict):
            annotation = get_args(annotation)[-1]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = _unwrap(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problems_from(error: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    """pydantic's errors as (path, message): what was given, what is accepted, and a "did you mean"."""
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        path = format_path(loc)
        kind = item["type"]
        if kind == "extra_forbidden":
            owner = _model_at(root, loc[:-1])
            accepted = sorted(owner.model_fields) if owner else []
            guess = difflib.get_close_matches(str(loc[-1]), accepted, n=1)
            hint = f"did you mean `{guess[0]}`? " if guess else ""
            problems.append((path, f"unknown key; {hint}accepted keys: {', '.join(accepted)}."))
            continue
        message = item["msg"]
        if kind in ("literal_error", "enum"):
            message = f"must be one of {item['ctx'].get('expected', '')}"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        elif message.startswith("Assertion failed, "):
            message = message[len("Assertion failed, ") :]
        got = "" if kind == "missing" else f"got {_short(item.get('input'))}: "
        problems.append((path, f"{got}{message[0].lower()}{message[1:]}".rstrip(".") + "."))
    return problems


def build(cls: type[BaseModel], values: dict[str, Any], what: str, overrides: list[str] | None = None) -> Any:
    """`cls` from a mapping (after `overrides`), or one `ConfigError` listing every problem found.

    Field problems (types, ranges, unknown keys) are all found in one pass; the rules (each section's `rules`,
    the root's `problems()`) need valid fields, so they run when there are none.
    """
    problems = override_problems(values, overrides or [])
    try:
        config = cls.model_validate(values)
    except ValidationError as error:
        raise ConfigError(problems + problems_from(error, cls), what) from None
    problems += section_problems(config)
    problems += config.problems() if hasattr(config, "problems") else []
    if problems:
        raise ConfigError(problems, what)
    return config


def close_match(value: str, accepted: list[str]) -> str:
    guess = difflib.get_close_matches(value, accepted, n=1)
    return f" (did you mean `{guess[0]}`?)" if guess else ""


# ---- sections built from the dataclasses that own the options ----


class _Lenient(GenerateJsonSchema):
    """Fields without a JSON form (a callable) still give their docstring."""

    def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> dict[str, Any]:
        return {}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, as pydantic reads them for every `Section`."""
    adapter = TypeAdapter(list[cls], config=ConfigDict(use_attribute_docstrings=True, arbitrary_types_allowed=True))
    properties = adapter.json_schema(schema_generator=_Lenient)["$defs"][cls.__name__]["properties"]
    return {name: " ".join(spec.get("description", "").split()) for name, spec in properties.items()}


def section_from_dataclass(cls: type, types: dict[str, Any] | None = None) -> type[Section]:
    """A `Section` with the public init fields (types, defaults, docs) of the dataclass `cls`, and its rules.

    The dataclass stays the one place an option is declared: a field added there is accepted here at once.
    `types` narrows a field's annotation for the config (`Literal` of an imported constant, `str` for a field
    that also takes a callable in Python). The class's `problems()` (see `wonton_hf._problems`) is the
    section's too: `build` reports what it finds under the section's path.
    """
    hints, docs, types = get_type_hints(cls, include_extras=True), field_docs(cls), types or {}
    definitions: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if not item.init or item.name.startswith("_"):
            continue
        extra = {"description": docs.get(item.name) or None}
        if item.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=item.default_factory, **extra)
        else:
            default = Field(... if item.default is dataclasses.MISSING else item.default, **extra)
        definitions[item.name] = (types.get(item.name, hints[item.name]), default)
    section = create_model(cls.__name__.removesuffix("Options") + "Options", __base__=Section, **definitions)
    if hasattr(cls, "problems"):
        section.rules = cls.problems  # called with the section: the rules read only the fields
    return section


def section_problems(model: BaseModel, path: str = "") -> list[tuple[str, str]]:
    """The `rules` of every section inside `model`, each problem under its full path."""
    found = []
    rules = getattr(type(model), "rules", None)
    if rules is not None:
        found += [(f"{path}.{name}" if path else name, message) for name, message in rules(model)]
    for name in type(model).model_fields:
        value, where = getattr(model, name), f"{path}.{name}" if path else name
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if isinstance(item, BaseModel):
                found += section_problems(item, where if index is None else f"{where}[{index}]")
    return found


LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
"""`transformers.SchedulerType` values (a test keeps the list in step with the installed transformers)."""

AttnImplementation = Literal["eager", "sdpa", "flex_attention", "flash_attention_2"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]


# ---- --help-config ----


def _type_name(annotation: Any) -> str:
    text = str(annotation) if get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("NoneType", "None")


def describe(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per field, nested sections expanded: `path (type, default: x) — doc`."""
    lines = []
    for name, info in cls.model_fields.items():
        path = f"{prefix}{name}"
        inner = _unwrap(info.annotation)
        nested = isinstance(inner, type) and issubclass(inner, BaseModel)
        is_list = get_origin(info.annotation) is list or any(get_origin(a) is list for a in get_args(info.annotation))
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = "default: " + ("{...}" if nested and not is_list else _short(info.default_factory()))
        else:
            default = f"default: {info.default!r}"
        kind = (
            f"list of {inner.__name__}"
            if nested and is_list
            else (inner.__name__ if nested else _type_name(info.annotation))
        )
        doc = f" - {info.description}" if info.description else ""
        lines.append(f"{path} ({kind}, {default}){doc}")
        if nested:
            lines += describe(inner, f"{path}[*]." if is_list else f"{path}.")
    return lines


def help_config(cls: type[BaseModel], title: str) -> str:
    return f"{title}: every field (`section.key=value` on the command line overrides it)\n\n" + "\n".join(describe(cls))


__all__ = [
    "ConfigError",
    "EXIT_CONFIG_ERROR",
    "Section",
    "apply_overrides",
    "build",
    "help_config",
    "load_yaml",
    "read_yaml_file",
    "section_from_dataclass",
]
