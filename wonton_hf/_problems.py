"""Problems as (field, message) pairs: how a class states its rules once for two readers.

A dataclass whose options come from Python or from a run config (the monitors' options, `DataSource`,
`Exp3Feedback`, `ChatSource`) lists what is wrong with it in `problems()`. Its `__post_init__` raises them as
one `ValueError` for a caller in Python, and the run-config check (`wonton_hf.training.schema`) reports them
under the field's config path, so a rule is written in one place whichever way the options arrive.
"""

from __future__ import annotations

from typing import Any

Problem = tuple[str, str]
"""(field name, what is wrong and what is accepted)"""


def bound(owner: Any, name: str, low: float, *, strict: bool = False, optional: bool = False) -> list[Problem]:
    """`name` must be >= `low` (> with `strict`); None passes when `optional`. Worded like pydantic's own
    constraint errors, so a config reports bounds the same way whether a type or a rule found them."""
    value = getattr(owner, name)
    if value is None and optional:
        return []
    if isinstance(value, bool) or not isinstance(value, int | float) or (value <= low if strict else value < low):
        relation = "greater than" if strict else "greater than or equal to"
        return [(name, f"got {value!r}: must be {relation} {low}")]
    return []


def raise_problems(owner: str, problems: list[Problem]) -> None:
    """One `ValueError` naming the owner and every field at fault (unless the message names it), or nothing."""
    if problems:
        named = [message if f"`{name}`" in message else f"`{name}` {message}" for name, message in problems]
        raise ValueError(f"{owner}: " + "; ".join(named) + ".")
