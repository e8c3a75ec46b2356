"""Named crash points: ``EMZIP_FAILPOINT=<name>[#<n>]`` SIGKILLs this process at the n-th pass.

``EMZIP_FAILPOINT=<name>!<ERRNO>[#<n>]`` (``outbox.write!EIO``) raises that ``OSError`` instead,
naming the path the point guards, at the n-th pass and every pass after it: a disk or mount that
went bad stays bad. With ``EMZIP_FAILPOINT_ONCE`` only the process that claims the file fails (one
worker of a pool whose mount broke), and it keeps failing.

The crash-test harness (``bench/reliability/``, ``tests/test_reliability.py``) kills the edge and
restore flows at every step that matters (inside training, between writing a file and the ledger
recording it, mid-copy, mid-write, while pruning) and checks that the next run finishes with every
block shipped and restored exactly once. A kill from outside lands at a random instant; a named
point lands exactly between the two effects whose order the test is about. A point acts only
when a test armed the process too (``EMZIP_FAILPOINTS_ARMED=1``, inherited by its helper
processes); ``emzip`` on the command line removes both variables before it runs anything, so a
stray ``EMZIP_FAILPOINT`` in a facility's environment never kills a production run. Unarmed, a
point costs one environment lookup and does nothing.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENVIRONMENT = "EMZIP_FAILPOINT"
#: Must be "1" for any point to act: set by the crash tests alone (``arm``).
ARMED = "EMZIP_FAILPOINTS_ARMED"
#: A file path: the point fires only in the one process that creates it (a pool's replacement
#: worker, started with the same environment, then runs through).
ONCE = "EMZIP_FAILPOINT_ONCE"
#: Every point in the code, in pipeline order (the harness sweeps them all).
POINTS = (
    "encode.train",  # inside training (the codec's progress callback)
    "encode.written",  # container in the outbox, provenance record not yet
    "record.written",  # container and record in the outbox, ledger still says discovered
    "verify.decoding",  # the separate verifying decode is running
    "verify.done",  # verified and recorded, ledger still says encoded
    "copy.partial",  # a file's bytes are in a temporary name at the destination, not yet renamed
    "copy.done",  # every file of the batch verified at the destination, ledger not yet shipped
    "prune.outbox",  # pruning the outbox: one copy deleted, the rest not
    "prune.raw",  # pruning raw acquisition files: one deleted, the rest not
    "restore.write",  # the block's voxels written into the volume, not yet read back
    "pyramid.block",  # the restoring worker wrote level 1 over part of its block, ledger still says shipped
    "restore.written",  # written and read back, ledger still says shipped
    "pyramid.chunk",  # a pyramid chunk recomputed and written, the others of its level not yet
)
#: Points in helper processes (not the flow's): a verifier pool worker mid-decode.
WORKER_POINTS = ("verifier.decoding",)
#: Points that raise an ``OSError`` (``<name>!<ERRNO>``) where a write can fail: the container's
#: write into the outbox, in whichever process codes the block.
ERROR_POINTS = ("outbox.write",)
#: Points of ``emzip convert``: a block coded on its worker, not yet placed; a block's chunk placed
#: in the archive, the ledger not yet told.
CONVERT_POINTS = ("convert.coded", "convert.placed")

_passes: Counter[str] = Counter()
#: Error points this process claimed through ``ONCE``: they fail at every later pass too.
_claimed: set[str] = set()

__all__ = [
    "ARMED",
    "CONVERT_POINTS",
    "ENVIRONMENT",
    "ERROR_POINTS",
    "ONCE",
    "POINTS",
    "WORKER_POINTS",
    "disarm",
    "failpoint",
]


def disarm() -> bool:
    """Remove the failpoint variables from this process's environment; True if any was set."""
    found = False
    for name in (ENVIRONMENT, ARMED, ONCE):
        found = os.environ.pop(name, None) is not None or found
    return found


def failpoint(name: str, path: object = None) -> None:
    """SIGKILL this process if ``EMZIP_FAILPOINT`` names this point (at its n-th pass with ``#n``);
    with ``!<ERRNO>``, raise that ``OSError`` naming ``path`` instead."""
    wanted = os.environ.get(ENVIRONMENT)
    if not wanted or os.environ.get(ARMED) != "1":
        return
    point, _, nth = wanted.partition("#")
    point, _, error = point.partition("!")
    if point != name:
        return
    _passes[name] += 1
    if _passes[name] < int(nth or 1):
        return
    once = os.environ.get(ONCE)
    if once and name not in _claimed:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        _claimed.add(name)
    if not error:
        os.kill(os.getpid(), signal.SIGKILL)
    code = getattr(errno, error)
    raise OSError(code, f"{os.strerror(code)} (writing {path}; failpoint {name})", None if path is None else str(path))
