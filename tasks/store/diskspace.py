"""Recognise a full disk (or an exhausted quota) behind whatever error a writer raised.

A full disk is not the block's fault: the block must stay retryable (claim released, state kept)
and the run must stop claiming more work, instead of marking block after block failed. Writers
report it differently: ``OSError`` with ``ENOSPC``/``EDQUOT`` from our own writes, TensorStore a
``ValueError`` whose text carries the OS message, SQLite ``database or disk is full``.
"""

from __future__ import annotations

import errno
import os

OUT_OF_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_MESSAGES = (*(os.strerror(code) for code in OUT_OF_SPACE_ERRNOS), "database or disk is full")

__all__ = ["OUT_OF_SPACE_ERRNOS", "OutOfSpaceError", "out_of_space"]


class OutOfSpaceError(OSError):
    """A run stopped because a disk or quota is full; its blocks stay retryable."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


def out_of_space(exc: BaseException) -> bool:
    """True when ``exc`` or any error it was raised from says the disk or the quota is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in OUT_OF_SPACE_ERRNOS:
            return True
        if any(message in str(current) for message in _MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False
