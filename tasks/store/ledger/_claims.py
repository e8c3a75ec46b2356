"""Claims and transitions: how a worker takes blocks and moves them along, on either side.

A worker claims blocks before working on them (``claim``); a claim names the worker, host and
process and carries a lease. Another worker may take a block over only when the lease has expired
or, on the same host, the claiming process is gone, so a process killed mid-block leaves the block
retryable, never stuck or lost. Claims use ``BEGIN IMMEDIATE`` so two workers can never claim the
same block; each transition is checked against ``TRANSITIONS`` and logged.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from tasks.store.ledger._records import (
    _RELEASE_SQL,
    DEFAULT_LEASE_SECONDS,
    STATES,
    TRANSITIONS,
    BlockRecord,
    LedgerCore,
)
from tasks.store.ledger._schema import LedgerError

__all__ = ["Claims"]


class Claims(LedgerCore):
    """Claiming blocks, moving them through their states, failing and retrying them."""

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
