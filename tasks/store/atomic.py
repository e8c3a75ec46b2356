"""Crash-safe file writes: temporary name in the same folder, fsync, rename, fsync the folder.

No partial file ever carries its final name, and a finished write survives a power cut. A writer
holds an advisory lock (``flock``) on its temporary file until the rename; the kernel drops it when
the process dies, so the next writer of the same file can tell a temporary abandoned by a killed
process (unlocked: deleted) from one still being written (locked: left alone). Errors name the
file being written and the cause (``No space left on device``, ``Disk quota exceeded``, ...).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

# Finished files get the permissions a plain open() gives them, whatever the writer's umask did later.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
TEMPORARY_SUFFIX = ".part"

__all__ = [
    "FILE_MODE",
    "TEMPORARY_SUFFIX",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_directory",
    "locked_temporary",
    "remove_abandoned_temporaries",
    "write_probe",
]


def fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_abandoned_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` whose writer is gone (their lock is free); returns them."""
    removed = []
    for stale in path.parent.glob(f".{path.name}.*{TEMPORARY_SUFFIX}"):
        try:
            descriptor = os.open(stale, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer holds it
        finally:
            os.close(descriptor)
        stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


@contextlib.contextmanager
def locked_temporary(path: Path) -> Iterator[tuple[Path, BinaryIO]]:
    """A locked temporary file beside ``path`` (``.<name>.<random>.part``), deleted if not renamed.

    The caller writes, then renames it over ``path`` inside the block (the lock is held until the
    file is closed, after the rename). Temporaries abandoned by killed writers are removed first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}")
    try:
        with temporary.open("xb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield temporary, handle
    finally:
        temporary.unlink(missing_ok=True)


def _named(exc: OSError, path: Path) -> OSError:
    """The same error, saying which file was being written."""
    return OSError(exc.errno, f"{exc.strerror or exc} (writing {path})", str(path))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync, rename, fsync the folder."""
    try:
        with locked_temporary(path) as (temporary, handle):
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), FILE_MODE)
            os.fsync(handle.fileno())
            os.replace(temporary, path)
        fsync_directory(path.parent)
    except OSError as exc:
        raise _named(exc, path) from exc


def atomic_write_json(path: Path, document: Any) -> None:
    """Write a JSON document atomically (sorted keys, indented, trailing newline)."""
    atomic_write_bytes(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def write_probe(folder: Path) -> OSError | None:
    """Write, fsync and delete a small file in ``folder``: None when that worked, else the error.

    Tells a folder that cannot be written (a full or read-only disk, a broken mount) from one
    another process could not write: the edge asks it when a worker's outbox write failed.
    """
    probe = folder / f".emzip-probe-{uuid.uuid4().hex}"
    try:
        atomic_write_bytes(probe, b"emzip write probe\n")
        probe.unlink()
    except OSError as exc:
        return exc
    return None
