"""The ledger's SQLite schema, and opening a database file of any schema this emzip upgrades.

``SCHEMA_VERSION`` is written in the ``meta`` table. Older schemas (``_UPGRADABLE``) are upgraded
in place as they are opened: missing tables are created (``CREATE TABLE IF NOT EXISTS``), missing
``blocks`` columns added (``ALTER TABLE``), and the new version recorded; a newer or unknown schema
is refused, naming the file. The database runs in WAL mode with ``synchronous=FULL`` and a busy
timeout, so several processes on a node share it.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from contextlib import suppress
from pathlib import Path

_NEARLY_FULL = 1 << 20  # bytes free below which a failed write is blamed on a full disk

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    block_id TEXT PRIMARY KEY,
    volume TEXT NOT NULL,
    bounds TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    raw_sha256 TEXT,
    raw_bytes INTEGER,
    compressed_sha256 TEXT,
    compressed_bytes INTEGER,
    codec TEXT,
    bits_per_voxel REAL,
    outbox_path TEXT,
    batch_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claim_host TEXT,
    claim_pid INTEGER,
    claim_expires REAL,
    timings TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    raw_stamp TEXT
);
CREATE INDEX IF NOT EXISTS blocks_volume_state ON blocks (volume, state);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    block_id TEXT NOT NULL,
    at REAL NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    worker TEXT,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    submission_id TEXT,
    task_id TEXT,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS volumes (
    volume TEXT PRIMARY KEY,
    acquisition TEXT NOT NULL,
    location TEXT NOT NULL,
    bound REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS block_versions (
    block_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    bounds TEXT NOT NULL,
    state TEXT NOT NULL,
    raw_sha256 TEXT,
    compressed_sha256 TEXT,
    outbox_path TEXT,
    superseded REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (block_id, version)
);
CREATE TABLE IF NOT EXISTS pyramid_pending (
    volume TEXT NOT NULL,
    footprint TEXT NOT NULL,
    PRIMARY KEY (volume, footprint)
);
"""
SCHEMA_VERSION = "4"
#: Schemas this emzip opens, upgrading them in place: 1 had no ``volumes`` table (its volumes are
#: "legacy": not yet bound to an acquisition, see ``Ledger.bind_volume``); 1 and 2 had no
#: ``pyramid_pending`` (their restored volumes are plain arrays without a pyramid); 1 to 3 had no
#: block versions (every block they hold is version 1, with no raw stamp).
_UPGRADABLE = ("1", "2", "3")
#: Columns added to ``blocks`` after schema 1 (``ALTER TABLE`` on upgrade; CREATE IF NOT EXISTS
#: does not add columns to an existing table).
_ADDED_COLUMNS = {"version": "INTEGER NOT NULL DEFAULT 1", "raw_stamp": "TEXT"}

__all__ = ["SCHEMA_VERSION", "LedgerError", "failure", "open_database"]


class LedgerError(Exception):
    """A ledger operation is not allowed (unknown block, illegal transition, claim held by another)."""


def failure(path: Path, doing: str, exc: Exception) -> LedgerError:
    """A ``LedgerError`` naming the file, SQLite's error, and a full filesystem when that is the cause.

    SQLite reports a full disk met while creating its WAL index as a plain ``disk I/O error``.
    """
    cause = f"{exc} ({getattr(exc, 'sqlite_errorname', type(exc).__name__)})"
    with suppress(OSError):
        free = shutil.disk_usage(path.parent).free
        if free < _NEARLY_FULL:
            cause += f"; {os.strerror(errno.ENOSPC)} ({free} bytes free on the ledger's filesystem)"
    return LedgerError(f"{path}: {doing}: {cause}")


def open_database(path: Path, timeout: float) -> sqlite3.Connection:
    """Open (creating) the ledger database at ``path``, upgraded to ``SCHEMA_VERSION``.

    Raises ``LedgerError`` naming the file when it cannot be opened or holds a schema this emzip
    does not read.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        connection.executescript(_SCHEMA)
        _add_columns(connection)
        version = connection.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is None:
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif version[0] in _UPGRADABLE:  # the new tables and columns exist now: record the version
            connection.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
    except (OSError, sqlite3.Error) as exc:
        raise failure(path, "cannot open the ledger", exc) from exc
    if version is not None and version[0] not in _UPGRADABLE and version[0] != SCHEMA_VERSION:
        connection.close()
        raise LedgerError(f"{path}: ledger schema {version[0]}, this emzip reads {SCHEMA_VERSION}")
    return connection


def _add_columns(connection: sqlite3.Connection) -> None:
    """Give a ``blocks`` table from an older schema the columns added since (idempotent)."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(blocks)")}
    for name, declaration in _ADDED_COLUMNS.items():
        if name not in present:
            with suppress(sqlite3.OperationalError):  # another process added it first
                connection.execute(f"ALTER TABLE blocks ADD COLUMN {name} {declaration}")
