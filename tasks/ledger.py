"""The block ledger: one SQLite database per node recording every block's journey.

States, in order: ``discovered`` -> ``encoded`` -> ``verified`` -> ``shipped`` -> ``restored``;
``failed`` (with the reason) from anywhere. Every transition is one transaction and is logged in
the ``events`` table, so the ledger answers "what is pending, what failed and why, how far along is
this volume" and keeps the history.

Claims: a worker claims blocks before working on them (``claim``); a claim names the worker, host
and process and carries a lease. Another worker may take a block over only when the lease has
expired or, on the same host, the claiming process is gone, so a process killed mid-block leaves
the block retryable, never stuck or lost. SQLite runs in WAL mode with a busy timeout; claims use
``BEGIN IMMEDIATE`` so two workers can never claim the same block.

Versions: a block is (volume, grid position, version). When a block's bounds grow (the
acquisition was shorter than its extent when it was coded) or its raw data changes, ``supersede``
keeps the old version's row in ``block_versions`` and starts the block again as the next version
(``discovered`` at the edge, ``shipped`` at the data center when a newer version arrives), so
provenance keeps every version and only the newest is restored.

Transfer batches (``batches`` table) persist the Globus ``submission_id`` obtained before
submitting, so a retry after a crash re-submits under the same id and can never start a second copy.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.grid import BlockRef

STATES = ("discovered", "encoded", "verified", "shipped", "restored", "failed")
#: States of blocks whose copy the destination confirmed (shipped, and at the data center restored).
SHIPPED_STATES = ("shipped", "restored")
TRANSITIONS: dict[str, set[str]] = {
    "discovered": {"encoded", "failed"},
    "encoded": {"verified", "discovered", "failed"},
    "verified": {"shipped", "discovered", "failed"},
    "shipped": {"restored", "failed"},
    "restored": set(),
    "failed": {"discovered", "shipped"},
}
DEFAULT_LEASE_SECONDS = 3600.0
_NEARLY_FULL = 1 << 20  # bytes free below which a failed write is blamed on a full disk
_FIELDS = (
    "raw_sha256",
    "raw_bytes",
    "compressed_sha256",
    "compressed_bytes",
    "codec",
    "bits_per_voxel",
    "outbox_path",
    "batch_id",
    "raw_stamp",
)

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
_RELEASE_SQL = "UPDATE blocks SET claimed_by=NULL, claim_host=NULL, claim_pid=NULL, claim_expires=NULL WHERE block_id=?"

__all__ = ["SHIPPED_STATES", "STATES", "BlockRecord", "Ledger", "LedgerError", "worker_identity"]


class LedgerError(Exception):
    """A ledger operation is not allowed (unknown block, illegal transition, claim held by another)."""


def worker_identity() -> str:
    """A worker name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class BlockRecord:
    """One row of the ledger."""

    block: BlockRef
    state: str
    reason: str | None
    attempts: int
    raw_sha256: str | None
    raw_bytes: int | None
    compressed_sha256: str | None
    compressed_bytes: int | None
    codec: str | None
    bits_per_voxel: float | None
    outbox_path: str | None
    batch_id: str | None
    claimed_by: str | None
    timings: dict[str, float]
    updated: float
    version: int = 1
    """1 for a block's first coding; one more each time it is superseded (grown or changed)."""
    raw_stamp: str | None = None
    """Size and modification time of the raw files when the block was read (``tasks.revisions``)."""

    @property
    def block_id(self) -> str:
        """The block's id."""
        return self.block.block_id


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """A node's block ledger at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._connection.executescript(_SCHEMA)
            self._add_columns()
            version = self._connection.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is None:
                self._connection.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        except (OSError, sqlite3.Error) as exc:
            raise self._failure("cannot open the ledger", exc) from exc
        if version is not None and version[0] in _UPGRADABLE:
            with self._transaction() as cursor:  # the new table exists (CREATE IF NOT EXISTS): record it
                cursor.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
        elif version is not None and version[0] != SCHEMA_VERSION:
            raise LedgerError(f"{self.path}: ledger schema {version[0]}, this emzip reads {SCHEMA_VERSION}")

    def _add_columns(self) -> None:
        """Give a ``blocks`` table from an older schema the columns added since (idempotent)."""
        present = {row[1] for row in self._connection.execute("PRAGMA table_info(blocks)")}
        for name, declaration in _ADDED_COLUMNS.items():
            if name not in present:
                with suppress(sqlite3.OperationalError):  # another process added it first
                    self._connection.execute(f"ALTER TABLE blocks ADD COLUMN {name} {declaration}")

    def close(self) -> None:
        """Close the database connection."""
        self._connection.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One ``BEGIN IMMEDIATE`` transaction; SQLite's own errors come out as ``LedgerError``s naming the file."""
        cursor = self._connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._failure("cannot start a ledger transaction", exc) from exc
        try:
            yield cursor
            cursor.execute("COMMIT")
        except BaseException as exc:
            if self._connection.in_transaction:
                with suppress(sqlite3.Error):
                    cursor.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._failure("ledger write failed", exc) from exc
            raise

    def _failure(self, doing: str, exc: Exception) -> LedgerError:
        """A ``LedgerError`` naming the file, SQLite's error, and a full filesystem when that is the cause.

        SQLite reports a full disk met while creating its WAL index as a plain ``disk I/O error``.
        """
        cause = f"{exc} ({getattr(exc, 'sqlite_errorname', type(exc).__name__)})"
        with suppress(OSError):
            free = shutil.disk_usage(self.path.parent).free
            if free < _NEARLY_FULL:
                cause += f"; {os.strerror(errno.ENOSPC)} ({free} bytes free on the ledger's filesystem)"
        return LedgerError(f"{self.path}: {doing}: {cause}")

    # -- volumes and their acquisitions -------------------------------------------------------

    def bind_volume(self, volume: str, acquisition: str, location: str, *, adopt_legacy: bool = False) -> None:
        """Tie ``volume`` to the acquisition ``acquisition`` at ``location``, or refuse (``LedgerError``).

        A volume id belongs to one acquisition for good: another acquisition claiming it is
        refused, so its blocks can never pass for the first one's (shipped, prunable). The same
        acquisition seen at a new location is accepted only when the old location is gone (the
        folder was moved); while both exist, one is a copy and is refused. A volume with blocks
        but no binding (a ledger from before bindings) is bound only with ``adopt_legacy``, when
        the caller has checked the blocks came from this source.
        """
        now = time.time()
        with self._transaction() as cursor:
            row = cursor.execute("SELECT * FROM volumes WHERE volume=?", (volume,)).fetchone()
            if row is not None:
                if row["acquisition"] != acquisition:
                    raise LedgerError(
                        f"{self.path}: volume id {volume!r} belongs to another acquisition (at {row['location']}, "
                        f"id {row['acquisition'][:12]}); {location} is acquisition {acquisition[:12]}: "
                        "give this one another volume name (--name)"
                    )
                if row["location"] != location:
                    if Path(row["location"]).exists():
                        raise LedgerError(
                            f"{self.path}: acquisition {acquisition[:12]} of volume {volume!r} is at "
                            f"{row['location']} and also at {location}: one is a copy. If the copy holds other "
                            "data, delete its .emzip-acquisition.json (it then gets an id of its own)"
                        )
                    cursor.execute("UPDATE volumes SET location=?, bound=? WHERE volume=?", (location, now, volume))
                return
            legacy = cursor.execute("SELECT 1 FROM blocks WHERE volume=? LIMIT 1", (volume,)).fetchone()
            if legacy is not None and not adopt_legacy:
                raise LedgerError(
                    f"{self.path}: volume {volume!r} has blocks from before acquisition ids, from a source "
                    f"that cannot be shown to be {location}: give this acquisition another volume name (--name)"
                )
            cursor.execute(
                "INSERT INTO volumes (volume, acquisition, location, bound) VALUES (?, ?, ?, ?)",
                (volume, acquisition, location, now),
            )

    def volume_binding(self, volume: str) -> dict[str, Any] | None:
        """The acquisition a volume id is bound to (acquisition, location, bound), or None."""
        row = self._connection.execute("SELECT * FROM volumes WHERE volume=?", (volume,)).fetchone()
        return dict(row) if row is not None else None

    def has_blocks(self, volume: str) -> bool:
        """Whether the ledger holds any block of ``volume``."""
        return self._connection.execute("SELECT 1 FROM blocks WHERE volume=? LIMIT 1", (volume,)).fetchone() is not None

    # -- discovery -----------------------------------------------------------------------------

    def discover(self, blocks: Iterable[BlockRef]) -> int:
        """Record blocks not yet known as ``discovered``; returns how many were new."""
        now = time.time()
        added = 0
        with self._transaction() as cursor:
            for block in blocks:
                cursor.execute(
                    "INSERT OR IGNORE INTO blocks (block_id, volume, bounds, state, created, updated) "
                    "VALUES (?, ?, ?, 'discovered', ?, ?)",
                    (block.block_id, block.volume, json.dumps(block.as_json()["bounds"]), now, now),
                )
                if cursor.rowcount:
                    added += 1
                    self._event(cursor, block.block_id, None, "discovered", None, None)
        return added

    def receive(self, block: BlockRef, version: int = 1, **fields: Any) -> bool:
        """Record a block that arrived at the data center as ``shipped``; False if already known.

        A newer ``version`` of a known block supersedes it (``supersede``): the old version stays in
        the history and the new one waits, shipped, to be restored over it. An older or equal
        version of a known block changes nothing.
        """
        now = time.time()
        with self._transaction() as cursor:
            row = cursor.execute("SELECT * FROM blocks WHERE block_id=?", (block.block_id,)).fetchone()
            if row is not None:
                if version <= row["version"] or not self._takeable(row, None, now):
                    return False
                self._supersede(cursor, row, block, version, "shipped", f"version {version} received")
            else:
                cursor.execute(
                    "INSERT INTO blocks (block_id, volume, bounds, state, created, updated, version) "
                    "VALUES (?, ?, ?, 'shipped', ?, ?, ?)",
                    (block.block_id, block.volume, json.dumps(block.as_json()["bounds"]), now, now, version),
                )
                self._event(cursor, block.block_id, None, "shipped", None, "received")
            self._update_fields(cursor, block.block_id, fields)
        return True

    def supersede(self, block: BlockRef, reason: str) -> int | None:
        """Start ``block`` (same id, maybe new bounds) again as its next version, ``discovered``.

        The current version's row goes into ``block_versions`` with ``reason`` (grown, raw data
        changed). Refused (None) while another live worker holds the block's claim: the next run
        looks again. Returns the new version.
        """
        with self._transaction() as cursor:
            row = cursor.execute("SELECT * FROM blocks WHERE block_id=?", (block.block_id,)).fetchone()
            if row is None:
                raise LedgerError(f"unknown block {block.block_id}")
            if not self._takeable(row, None, time.time()):
                return None
            version = int(row["version"]) + 1
            self._supersede(cursor, row, block, version, "discovered", reason)
        return version

    def versions(self, block_id: str) -> list[dict[str, Any]]:
        """Every superseded version of a block (oldest first), as recorded when it was superseded."""
        rows = self._connection.execute("SELECT * FROM block_versions WHERE block_id=? ORDER BY version", (block_id,))
        return [dict(row) for row in rows]

    def restamp(self, block_id: str, stamp: str) -> None:
        """Record a block's raw files' new size and time after their checksum showed the same data."""
        with self._transaction() as cursor:
            cursor.execute("UPDATE blocks SET raw_stamp=? WHERE block_id=?", (stamp, block_id))

    def _supersede(
        self, cursor: sqlite3.Cursor, row: sqlite3.Row, block: BlockRef, version: int, state: str, reason: str
    ) -> None:
        now = time.time()
        cursor.execute(
            "INSERT OR REPLACE INTO block_versions (block_id, version, bounds, state, raw_sha256, compressed_sha256, "
            "outbox_path, superseded, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["block_id"],
                row["version"],
                row["bounds"],
                row["state"],
                row["raw_sha256"],
                row["compressed_sha256"],
                row["outbox_path"],
                now,
                reason,
            ),
        )
        cursor.execute(
            "UPDATE blocks SET state=?, version=?, bounds=?, reason=NULL, raw_sha256=NULL, raw_bytes=NULL, "
            "compressed_sha256=NULL, compressed_bytes=NULL, codec=NULL, bits_per_voxel=NULL, outbox_path=NULL, "
            "batch_id=NULL, raw_stamp=NULL, attempts=0, timings='{}', claimed_by=NULL, claim_host=NULL, "
            "claim_pid=NULL, claim_expires=NULL, updated=? WHERE block_id=?",
            (state, version, json.dumps(block.as_json()["bounds"]), now, row["block_id"]),
        )
        self._event(cursor, row["block_id"], row["state"], state, None, f"version {version}: {reason}")

    @staticmethod
    def _takeable(row: sqlite3.Row, worker: str | None, now: float) -> bool:
        """Whether nobody else works on the block: unclaimed, ours, lease expired, or its process gone."""
        if row["claimed_by"] is None or row["claimed_by"] == worker:
            return True
        expired = row["claim_expires"] is not None and row["claim_expires"] < now
        return expired or (row["claim_host"] == socket.gethostname() and not _pid_alive(int(row["claim_pid"])))

    # -- claims --------------------------------------------------------------------------------

    def claim(
        self,
        worker: str,
        states: Iterable[str] = ("discovered", "encoded", "verified"),
        *,
        volume: str | None = None,
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        block_ids: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
    ) -> list[BlockRecord]:
        """Claim up to ``limit`` unclaimed blocks in ``states`` for ``worker`` (none of ``exclude``).

        A block held by a claim whose lease has expired, or whose process on this host is gone,
        counts as unclaimed (its earlier holder was killed). Each claim counts one attempt.
        """
        wanted = tuple(states)
        host = socket.gethostname()
        now = time.time()
        query = f"SELECT * FROM blocks WHERE state IN ({','.join('?' * len(wanted))})"
        params: list[Any] = list(wanted)
        if volume is not None:
            query += " AND volume=?"
            params.append(volume)
        ids = list(block_ids) if block_ids is not None else None
        if ids is not None:
            query += f" AND block_id IN ({','.join('?' * len(ids))})"
            params.extend(ids)
        # Only rows someone could take (unclaimed, lease expired, or held on this host where the pid
        # is checked below), read lazily in id order: a claim costs what it takes, not the ledger's size.
        query += " AND (claimed_by IS NULL OR claim_expires < ? OR claim_host = ?) ORDER BY block_id"
        params += [now, host]
        claimed: list[str] = []
        skip = frozenset(exclude)
        with self._transaction() as cursor:
            for row in self._connection.execute(query, params):
                if len(claimed) >= limit:
                    break
                if row["block_id"] in skip:
                    continue
                if row["claimed_by"] == worker:
                    continue  # already ours: claiming is for blocks nobody is working on
                if row["claimed_by"] is not None:
                    if not self._takeable(row, None, now):
                        continue
                    self._event(
                        cursor,
                        row["block_id"],
                        row["state"],
                        row["state"],
                        worker,
                        f"took over claim of {row['claimed_by']}",
                    )
                cursor.execute(
                    "UPDATE blocks SET claimed_by=?, claim_host=?, claim_pid=?, claim_expires=?, attempts=attempts+1, "
                    "updated=? WHERE block_id=?",
                    (worker, host, os.getpid(), now + lease_seconds, now, row["block_id"]),
                )
                claimed.append(row["block_id"])
        return [self.get(block_id) for block_id in claimed]

    def release(self, block_id: str, worker: str) -> None:
        """Give up a claim without changing state (the block is someone else's to take)."""
        with self._transaction() as cursor:
            self._check_claim(cursor, block_id, worker)
            cursor.execute(_RELEASE_SQL, (block_id,))

    def release_all(self, worker: str) -> int:
        """Release every claim ``worker`` still holds (states unchanged); returns how many."""
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE blocks SET claimed_by=NULL, claim_host=NULL, claim_pid=NULL, claim_expires=NULL "
                "WHERE claimed_by=?",
                (worker,),
            )
            return int(cursor.rowcount)

    def advance(
        self,
        block_id: str,
        worker: str,
        to_state: str,
        *,
        reason: str | None = None,
        timings: dict[str, float] | None = None,
        release: bool = False,
        **fields: Any,
    ) -> BlockRecord:
        """Move a claimed block to ``to_state``, updating its fields, in one transaction."""
        return self.advance_through(
            block_id, worker, (to_state,), reason=reason, timings=timings, release=release, **fields
        )

    def advance_through(
        self,
        block_id: str,
        worker: str,
        states: tuple[str, ...],
        *,
        reason: str | None = None,
        timings: dict[str, float] | None = None,
        release: bool = False,
        **fields: Any,
    ) -> BlockRecord:
        """Move a claimed block through ``states`` in order, in one transaction (each step legal and logged).

        A process killed here leaves the block before the first step or after the last, never between.
        """
        for state in states:
            if state not in STATES:
                raise LedgerError(f"unknown state {state!r}")
        with self._transaction() as cursor:
            row = self._check_claim(cursor, block_id, worker)
            merged = json.loads(row["timings"])
            merged.update(timings or {})
            self._update_fields(cursor, block_id, fields)
            current = row["state"]
            for to_state in states:
                if to_state not in TRANSITIONS[current]:
                    raise LedgerError(f"{block_id}: cannot go from {current} to {to_state}")
                self._event(cursor, block_id, current, to_state, worker, reason)
                current = to_state
            cursor.execute(
                "UPDATE blocks SET state=?, reason=?, timings=?, updated=? WHERE block_id=?",
                (current, reason, json.dumps(merged), time.time(), block_id),
            )
            if release:
                cursor.execute(_RELEASE_SQL, (block_id,))
        return self.get(block_id)

    def annotate(self, block_id: str, worker: str, **fields: Any) -> BlockRecord:
        """Update fields of a claimed block without changing its state (e.g. its transfer batch)."""
        with self._transaction() as cursor:
            self._check_claim(cursor, block_id, worker)
            self._update_fields(cursor, block_id, fields)
        return self.get(block_id)

    def note(self, block_id: str, detail: str, worker: str | None = None) -> None:
        """Log something that happened to a block without changing its state (pruning, say)."""
        with self._transaction() as cursor:
            row = cursor.execute("SELECT state FROM blocks WHERE block_id=?", (block_id,)).fetchone()
            if row is None:
                raise LedgerError(f"unknown block {block_id}")
            self._event(cursor, block_id, row["state"], row["state"], worker, detail)

    def fail(self, block_id: str, worker: str, reason: str) -> BlockRecord:
        """Mark a claimed block failed with the reason and release it."""
        return self.advance(block_id, worker, "failed", reason=reason, release=True)

    def retry_failed(
        self, volume: str | None = None, max_attempts: int | None = None, to_state: str = "discovered"
    ) -> int:
        """Put failed blocks (with fewer than ``max_attempts`` attempts) back to ``to_state``.

        The edge retries from ``discovered``; the data center, which only restores, from ``shipped``.
        The reason each block failed stays in its history (the retry event says it).
        """
        if to_state not in TRANSITIONS["failed"]:
            raise LedgerError(f"failed blocks cannot go back to {to_state}")
        query = "SELECT block_id, attempts, reason FROM blocks WHERE state='failed' AND claimed_by IS NULL"
        params: list[Any] = []
        if volume is not None:
            query += " AND volume=?"
            params.append(volume)
        count = 0
        with self._transaction() as cursor:
            for row in cursor.execute(query, params).fetchall():
                if max_attempts is not None and row["attempts"] >= max_attempts:
                    continue
                cursor.execute(
                    "UPDATE blocks SET state=?, reason=NULL, updated=? WHERE block_id=?",
                    (to_state, time.time(), row["block_id"]),
                )
                self._event(cursor, row["block_id"], "failed", to_state, None, f"retry after: {row['reason'] or ''}")
                count += 1
        return count

    # -- refused input -------------------------------------------------------------------------

    def refuse(self, path: str, reason: str) -> bool:
        """Record a received file refused by validation (left in place); True if newly refused."""
        now = time.time()
        with self._transaction() as cursor:
            known = cursor.execute("SELECT reason FROM refusals WHERE path=?", (path,)).fetchone()
            cursor.execute(
                "INSERT INTO refusals (path, reason, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET reason=excluded.reason, last_seen=excluded.last_seen",
                (path, reason, now, now),
            )
        return known is None or known[0] != reason

    def accept(self, path: str) -> None:
        """Forget an earlier refusal of ``path`` (it was still arriving, or it was replaced)."""
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM refusals WHERE path=?", (path,))

    def refusals(self) -> dict[str, str]:
        """Every refused file (path -> the latest reason)."""
        rows = self._connection.execute("SELECT path, reason FROM refusals ORDER BY path").fetchall()
        return {row["path"]: row["reason"] for row in rows}

    # -- pyramids ------------------------------------------------------------------------------

    def mark_pyramid(self, volume: str, footprints: list[str]) -> None:
        """Record footprints whose pyramid chunks must be recomputed (``tasks.pyramid``), before writing them.

        A footprint is a block's level-0 bounds as JSON, or ``*`` for the whole volume.
        """
        with self._transaction() as cursor:
            cursor.executemany(
                "INSERT OR IGNORE INTO pyramid_pending (volume, footprint) VALUES (?, ?)",
                [(volume, footprint) for footprint in footprints],
            )

    def replace_pyramid(self, volume: str, footprint: str, narrower: str) -> None:
        """Swap a pending footprint for a narrower one (fewer levels left), in one transaction."""
        with self._transaction() as cursor:
            deleted = cursor.execute("DELETE FROM pyramid_pending WHERE volume=? AND footprint=?", (volume, footprint))
            if deleted.rowcount:
                cursor.execute("INSERT OR IGNORE INTO pyramid_pending VALUES (?, ?)", (volume, narrower))

    def pyramid_pending(self) -> dict[str, list[str]]:
        """Every volume with footprints still to be carried up its pyramid (volume -> footprints)."""
        pending: dict[str, list[str]] = {}
        for row in self._connection.execute("SELECT volume, footprint FROM pyramid_pending ORDER BY volume, footprint"):
            pending.setdefault(row["volume"], []).append(row["footprint"])
        return pending

    def clear_pyramid(self, volume: str, footprints: list[str]) -> None:
        """Forget footprints whose chunks were recomputed at every level."""
        with self._transaction() as cursor:
            cursor.executemany(
                "DELETE FROM pyramid_pending WHERE volume=? AND footprint=?",
                [(volume, footprint) for footprint in footprints],
            )

    # -- batches -------------------------------------------------------------------------------

    def open_batch(self, batch_id: str, destination: str, submission_id: str | None) -> dict[str, Any]:
        """Create a transfer batch once; on a repeat call return the stored one (same submission id)."""
        now = time.time()
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT OR IGNORE INTO batches (batch_id, destination, submission_id, state, created, updated) "
                "VALUES (?, ?, ?, 'open', ?, ?)",
                (batch_id, destination, submission_id, now, now),
            )
        return self.batch(batch_id)

    def update_batch(
        self, batch_id: str, state: str, task_id: str | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        """Record a batch's progress (submitted, succeeded, failed) and what the transfer reported."""
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE batches SET state=?, task_id=COALESCE(?, task_id), detail=?, updated=? WHERE batch_id=?",
                (state, task_id, json.dumps(detail or {}), time.time(), batch_id),
            )

    def batch(self, batch_id: str) -> dict[str, Any]:
        """A batch row as a dict; LedgerError if unknown."""
        row = self._connection.execute("SELECT * FROM batches WHERE batch_id=?", (batch_id,)).fetchone()
        if row is None:
            raise LedgerError(f"unknown transfer batch {batch_id}")
        result = dict(row)
        result["detail"] = json.loads(result["detail"])
        return result

    # -- queries -------------------------------------------------------------------------------

    def get(self, block_id: str) -> BlockRecord:
        """One block's record; LedgerError if unknown."""
        row = self._connection.execute("SELECT * FROM blocks WHERE block_id=?", (block_id,)).fetchone()
        if row is None:
            raise LedgerError(f"unknown block {block_id}")
        return self._record(row)

    def blocks(self, volume: str | None = None, states: Iterable[str] | None = None) -> list[BlockRecord]:
        """Blocks of a volume (or all), optionally only those in ``states``, in id order."""
        query = "SELECT * FROM blocks WHERE 1=1"
        params: list[Any] = []
        if volume is not None:
            query += " AND volume=?"
            params.append(volume)
        if states is not None:
            wanted = tuple(states)
            query += f" AND state IN ({','.join('?' * len(wanted))})"
            params.extend(wanted)
        return [self._record(row) for row in self._connection.execute(query + " ORDER BY block_id", params)]

    def pending(self, volume: str | None = None) -> list[BlockRecord]:
        """Blocks that still need edge work (discovered, encoded or verified)."""
        return self.blocks(volume, ("discovered", "encoded", "verified"))

    def failures(self, volume: str | None = None) -> list[tuple[str, str]]:
        """(block id, reason) of every failed block."""
        return [(r.block_id, r.reason or "") for r in self.blocks(volume, ("failed",))]

    def progress(self, volume: str | None = None) -> dict[str, int]:
        """Count of blocks per state (every state present, zero when none)."""
        query = "SELECT state, COUNT(*) FROM blocks"
        params: list[Any] = []
        if volume is not None:
            query += " WHERE volume=?"
            params.append(volume)
        counts = dict.fromkeys(STATES, 0)
        for state, count in self._connection.execute(query + " GROUP BY state", params):
            counts[state] = count
        return counts

    def events(self, block_id: str) -> list[dict[str, Any]]:
        """A block's transition history, oldest first."""
        rows = self._connection.execute("SELECT * FROM events WHERE block_id=? ORDER BY id", (block_id,))
        return [dict(row) for row in rows]

    # -- internals -----------------------------------------------------------------------------

    def _check_claim(self, cursor: sqlite3.Cursor, block_id: str, worker: str) -> sqlite3.Row:
        row = cursor.execute("SELECT * FROM blocks WHERE block_id=?", (block_id,)).fetchone()
        if row is None:
            raise LedgerError(f"unknown block {block_id}")
        if row["claimed_by"] != worker:
            raise LedgerError(f"{block_id}: not claimed by {worker} (held by {row['claimed_by']})")
        return row

    @staticmethod
    def _update_fields(cursor: sqlite3.Cursor, block_id: str, fields: dict[str, Any]) -> None:
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise LedgerError(f"unknown ledger fields {sorted(unknown)}")
        for name, value in fields.items():
            cursor.execute(f"UPDATE blocks SET {name}=? WHERE block_id=?", (value, block_id))

    @staticmethod
    def _event(
        cursor: sqlite3.Cursor,
        block_id: str,
        from_state: str | None,
        to_state: str,
        worker: str | None,
        detail: str | None,
    ) -> None:
        cursor.execute(
            "INSERT INTO events (block_id, at, from_state, to_state, worker, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (block_id, time.time(), from_state, to_state, worker, detail),
        )

    @staticmethod
    def _record(row: sqlite3.Row) -> BlockRecord:
        bounds = json.loads(row["bounds"])
        return BlockRecord(
            block=BlockRef.from_json({"volume": row["volume"], "bounds": bounds}),
            state=row["state"],
            reason=row["reason"],
            attempts=row["attempts"],
            raw_sha256=row["raw_sha256"],
            raw_bytes=row["raw_bytes"],
            compressed_sha256=row["compressed_sha256"],
            compressed_bytes=row["compressed_bytes"],
            codec=row["codec"],
            bits_per_voxel=row["bits_per_voxel"],
            outbox_path=row["outbox_path"],
            batch_id=row["batch_id"],
            claimed_by=row["claimed_by"],
            timings=json.loads(row["timings"]),
            updated=row["updated"],
            version=int(row["version"]),
            raw_stamp=row["raw_stamp"],
        )
