"""The edge's side of the ledger: volumes bound to their acquisitions, discovered blocks, new
versions of grown or changed blocks, and transfer batches.

Versions: a block is (volume, grid position, version). When a block's bounds grow (the acquisition
was shorter than its extent when it was coded) or its raw data changes, ``supersede`` keeps the old
version's row in ``block_versions`` and starts the block again as the next version.

Transfer batches (``batches`` table) persist the Globus ``submission_id`` obtained before
submitting, so a retry after a crash re-submits under the same id and can never start a second copy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tasks.source.grid import BlockRef
from tasks.store.ledger._records import LedgerCore
from tasks.store.ledger._schema import LedgerError

__all__ = ["EdgeTransitions"]


class EdgeTransitions(LedgerCore):
    """What the edge (and a convert, which codes like one) records beyond claims and transitions."""

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

    def restamp(self, block_id: str, stamp: str) -> None:
        """Record a block's raw files' new size and time after their checksum showed the same data."""
        with self._transaction() as cursor:
            cursor.execute("UPDATE blocks SET raw_stamp=? WHERE block_id=?", (stamp, block_id))

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
