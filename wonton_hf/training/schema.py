"""The machinery of the run configs: typed sections, YAML and `key=value` reading, one error for every problem.

Pretraining (`training/config.py`) and SFT (`chat/sft.py`) build their run configs from the sections here.
Every section is a pydantic model that forbids unknown keys; each field keeps its docstring (pydantic reads
them as descriptions, which `--help-config` prints). Validation runs before torch or transformers is
imported: this module imports neither, and what must be read from the heavy modules (the monitors' options,
the model presets, `WontonConfig`'s fields) is read from their source with `ast`, so it never drifts from
the code and costs milliseconds.

Errors: every problem in a config is collected into one `ConfigError` that names each field by its path
(`data.sources[2].weight`), what it got and what it accepts; the entry points print it and exit with 2.
"""

from __future__ import annotations

import ast
import difflib
import functools
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

PACKAGE = Path(__file__).resolve().parent.parent
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

    Field problems (types, ranges, unknown keys) are all found in one pass; the checks across fields (the
    model's `problems()`) need valid fields, so they run when there are none.
    """
    problems = override_problems(values, overrides or [])
    try:
        config = cls.model_validate(values)
    except ValidationError as error:
        raise ConfigError(problems + problems_from(error, cls), what) from None
    problems += config.problems() if hasattr(config, "problems") else []
    if problems:
        raise ConfigError(problems, what)
    return config


def close_match(value: str, accepted: list[str]) -> str:
    guess = difflib.get_close_matches(value, accepted, n=1)
    return f" (did you mean `{guess[0]}`?)" if guess else ""


# ---- reading the heavy modules' fields without importing them ----


@functools.cache
def _module_tree(relative: str) -> ast.Module:
    return ast.parse((PACKAGE / relative).read_text(encoding="utf-8"))


def _class_node(relative: str, class_name: str) -> ast.ClassDef:
    for node in _module_tree(relative).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return node
    raise LookupError(f"{class_name} not found in wonton_hf/{relative}")


def dataclass_fields(relative: str, class_name: str) -> list[tuple[str, str, ast.expr | None, str]]:
    """(name, annotation source, default expression, docstring) of each public field of a dataclass in the package."""
    body = _class_node(relative, class_name).body
    fields = []
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not node.target.id.startswith("_"):
            following = body[i + 1] if i + 1 < len(body) else None
            doc = (
                following.value.value
                if isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
                else ""
            )
            annotation = ast.unparse(node.annotation)
            init_false = isinstance(node.value, ast.Call) and any(
                k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
                for k in node.value.keywords
            )
            if "ClassVar" not in annotation and not init_false:
                fields.append((node.target.id, annotation, node.value, " ".join(doc.split())))
    return fields


def _default(node: ast.expr | None) -> Any:
    if node is None:
        return ...
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "field":
        for keyword in node.keywords:
            if keyword.arg == "default_factory":
                return Field(default_factory={"dict": dict, "list": list}[ast.unparse(keyword.value)])
            if keyword.arg == "default":
                return ast.literal_eval(keyword.value)
        return ...
    return ast.literal_eval(node)


_TYPES = {
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "Any": Any,
    "None": None,
}


def constant(relative: str, name: str) -> Any:
    """A module-level literal (e.g. a tuple of accepted values) of a file in the package, read without importing it."""
    for node in _module_tree(relative).body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} not found in wonton_hf/{relative}")


def _annotation(source: str) -> Any:
    try:
        return eval(source, {"__builtins__": {}}, _TYPES)  # noqa: S307 (annotations of our own files)
    except (NameError, TypeError, SyntaxError):
        return Any  # e.g. Callable[...]: such fields are overridden in `types` where the config can set them


def options_model(
    relative: str,
    class_name: str,
    constraints: dict[str, dict[str, Any]] | None = None,
    types: dict[str, Any] | None = None,
) -> type[Section]:
    """A `Section` with the fields (types, defaults, docs) of the dataclass `class_name` in `wonton_hf/<relative>`.

    How options are checked before torch is imported while their dataclasses stay the one place they are
    declared (a field added there is accepted here at once): the monitors' options, `DataSource`,
    `Exp3Feedback`. `constraints` adds pydantic field constraints (`{"window": {"ge": 2}}`); `types` replaces
    a field's annotation (enumerations as `Literal`, `module:function` strings for callables).
    """
    constraints, types = constraints or {}, types or {}
    definitions: dict[str, Any] = {}
    for name, annotation, default_node, doc in dataclass_fields(relative, class_name):
        kind = types.get(name, _annotation(annotation))
        default, extra = _default(default_node), {"description": doc or None, **constraints.get(name, {})}
        if isinstance(default, FieldInfo):
            definitions[name] = (kind, Field(default_factory=default.default_factory, **extra))
        else:
            definitions[name] = (kind, Field(default, **extra))
    return create_model(f"{class_name}Options", __base__=Section, **definitions)


@functools.cache
def model_presets() -> tuple[str, ...]:
    """The names in `WONTON_PRESETS`, read from configuration_wonton.py (importing it would import transformers)."""
    for node in _module_tree("models/wonton/configuration_wonton.py").body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == "WONTON_PRESETS" and isinstance(node.value, ast.Dict):
            return tuple(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    raise LookupError("WONTON_PRESETS not found in configuration_wonton.py")


@functools.cache
def model_config_fields() -> tuple[str, ...]:
    """`WontonConfig`'s own fields plus the generic `PreTrainedConfig` ones a run may sensibly set."""
    own = tuple(name for name, *_ in dataclass_fields("models/wonton/configuration_wonton.py", "WontonConfig"))
    return own + ("dtype", "output_hidden_states", "output_attentions")


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
    "model_presets",
    "options_model",
    "read_yaml_file",
]
