"""Names and paths from outside: safe volume names, and paths that must stay inside their root.

A volume name becomes a folder at the edge's outbox and at the data center
(``<restored>/<volume>.zarr``); one that is absolute, holds a separator or ``..``, or starts with a
dot would put files where nobody asked. Names come from folder and file names at the edge and from
received provenance records at the data center; both are checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

#: Volume names: letters, digits, ``_ . -``; starting with a letter, digit or ``_``; at most 128.
VOLUME_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

__all__ = ["VOLUME_NAME", "UnsafeInputError", "check_volume_name", "inside"]


class UnsafeInputError(ValueError):
    """Input from outside (a record, a name, a path) is malformed or points outside its root."""


def check_volume_name(name: object, where: str) -> str:
    """``name`` if it is a safe volume name, else ``UnsafeInputError`` naming ``where`` it came from."""
    if not isinstance(name, str) or not VOLUME_NAME.fullmatch(name) or ".." in name:
        raise UnsafeInputError(
            f"{where}: volume name {name!r} is not allowed (letters, digits, '_', '.', '-'; "
            "no separators, no leading dot, no '..', at most 128 characters)"
        )
    return name


def inside(root: Path, *parts: str) -> Path:
    """``root/parts...`` resolved, or ``UnsafeInputError`` when it would lie outside ``root``."""
    base = root.resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and not target.is_relative_to(base):
        raise UnsafeInputError(f"{root}: {'/'.join(parts)!r} resolves to {target}, outside {base}")
    return target
