"""Environment variables set for a while, in this process and in the processes it starts meanwhile."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["environment"]


def _apply(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """Set ``values`` (None: unset) in ``os.environ``; put back what was there after."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        _apply(values)
        yield
    finally:
        _apply(saved)
