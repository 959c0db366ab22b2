"""Where the tests find things outside this checkout: `../shared`, located one way, here only.

`../shared` holds the data the project may read but never copies (the 8-language corpus, the original
tokenizer, transformers' common model tests, paper notes). Tests that need it skip when it is absent.
It is `$WONTON_SHARED` when that variable is set (a checkout at another depth, CI, `tools/mutants.py`'s
temporary copies), else the `shared` folder next to the checkout's root. A `WONTON_SHARED` that names no
folder is an error at collection, not a silent skip. See docs/testing.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
"""The root of this checkout (the folder holding `tests/` and `wonton_hf/`)."""
SHARED_VARIABLE = "WONTON_SHARED"


def shared_dir() -> Path:
    """`$WONTON_SHARED` if set (it must be a folder), else `<checkout>/../shared` (which may be absent)."""
    given = os.environ.get(SHARED_VARIABLE)
    if given:
        path = Path(given).expanduser().resolve()
        if not path.is_dir():
            raise pytest.UsageError(
                f"${SHARED_VARIABLE}={given} is not a folder; unset it to use {CHECKOUT.parent / 'shared'}."
            )
        return path
    return CHECKOUT.parent / "shared"


SHARED = shared_dir()


def needs_shared(*parts: str):
    """A skip mark for a test that needs `SHARED/<parts>`; the reason names the path and the variable."""
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not available (set ${SHARED_VARIABLE})")
