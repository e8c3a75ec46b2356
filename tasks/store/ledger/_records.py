"""Block records: the part of the ledger both the edge and the data center use.

States, in order: ``discovered`` -> ``encoded`` -> ``verified`` -> ``shipped`` -> ``restored``;
``failed`` (with the reason) from anywhere. Every transition is one transaction and is logged in
the ``events`` table, so the ledger answers "what is pending, what failed and why, how far along is
this volume" and keeps the history.

A block is taken (claimed, superseded) only when nobody else works on it (``_takeable``); the
claims themselves are in ``_claims``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from tasks.source.grid import BlockRef
from tasks.store.ledger._schema import LedgerError, failure, open_database

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

_RELEASE_SQL = "UPDATE blocks SET claimed_by=NULL, claim_host=NULL, claim_pid=NULL, claim_expires=NULL WHERE block_id=?"

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "SHIPPED_STATES",
    "STATES",
    "TRANSITIONS",
    "BlockRecord",
    "LedgerCore",
    "worker_identity",
]


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
    """Size and modification time of the raw files when the block was read (``tasks.source.revisions``)."""

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


class LedgerCore:
    """A node's block ledger at ``path`` (created on first use): records, queries, claims and transitions."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._connection = open_database(self.path, timeout)

    def close(self) -> None:
        """Close the database connection."""
        self._connection.close()

    def __enter__(self) -> Self:
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
            raise failure(self.path, "cannot start a ledger transaction", exc) from exc
        try:
            yield cursor
            cursor.execute("COMMIT")
        except BaseException as exc:
            if self._connection.in_transaction:
                with suppress(sqlite3.Error):
                    cursor.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise failure(self.path, "ledger write failed", exc) from exc
            raise

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

    def versions(self, block_id: str) -> list[dict[str, Any]]:
        """Every superseded version of a block (oldest first), as recorded when it was superseded."""
        rows = self._connection.execute("SELECT * FROM block_versions WHERE block_id=? ORDER BY version", (block_id,))
        return [dict(row) for row in rows]

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _takeable(row: sqlite3.Row, worker: str | None, now: float) -> bool:
        """Whether nobody else works on the block: unclaimed, ours, lease expired, or its process gone."""
        if row["claimed_by"] is None or row["claimed_by"] == worker:
            return True
        expired = row["claim_expires"] is not None and row["claim_expires"] < now
        return expired or (row["claim_host"] == socket.gethostname() and not _pid_alive(int(row["claim_pid"])))

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
