"""sha256 of files and arrays: the one definition every stage compares against.

An array's sha256 is that of its C-order bytes, as the container's HEAD records it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20

__all__ = ["array_sha256", "file_sha256"]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(piece)
    return digest.hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """Hex sha256 of an array's C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()
