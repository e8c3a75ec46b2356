"""The data center's side of the ledger: blocks received (newest version wins), received files
refused by validation, and pyramid footprints still to be carried up.

A newer version of a known block arriving supersedes it (``receive``): the old version stays in
``block_versions`` and the new one waits, ``shipped``, to be restored over it, so only the newest
is restored.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tasks.source.grid import BlockRef
from tasks.store.ledger._records import LedgerCore

__all__ = ["DatacenterTransitions"]


class DatacenterTransitions(LedgerCore):
    """What the data center records beyond claims and transitions."""

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
        """Record footprints whose pyramid chunks must be recomputed (``tasks.datacenter.pyramid``), first.

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
