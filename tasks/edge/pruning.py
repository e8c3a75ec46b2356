"""Safe pruning of raw acquisition files once every block that uses them is shipped.

Off by default. A storage file (slice image, chunk or shard) may be deleted only when every block
of the volume's grid that reads from it is ``shipped`` (or ``restored``) in the ledger: shipped
means the container was verified by a separate decode and its checksum confirmed at the
destination, never mere existence. Files also used by a block still pending, failed or not yet
discovered are kept. Before a file goes, every shipped block reading it is read again and its
sha256 compared with the one the ledger shipped: a file whose data is not what was shipped (a
folder written again under the same name, a changed file) is kept and the mismatch noted.
Files of a block shorter in z than the grid (the acquisition's current tail) are kept too: if
the acquisition grows, that block is coded again from them (``tasks.source.revisions``). ``dry_run``
reports without deleting; every decision is logged in the ledger, and the result counts what was
kept and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.source.grid import BlockRef, block_grid
from tasks.source.volumes import Volume, VolumeError
from tasks.store.checksums import array_sha256
from tasks.store.failpoints import failpoint
from tasks.store.ledger import SHIPPED_STATES, Ledger

__all__ = ["RawPruneResult", "prune_raw_files"]


#: Why a raw file was kept (``RawPruneResult.kept_reasons``).
KEPT_UNSHIPPED = "used by blocks not shipped yet"
KEPT_TAIL = "in the tail block (coded again if the acquisition grows)"
KEPT_CHANGED = "raw data differs from what was shipped (or is unreadable)"


@dataclass(frozen=True)
class RawPruneResult:
    """Files deleted (or, in a dry run, deletable), and the files kept, counted by why."""

    files: list[Path]
    kept_reasons: dict[str, int]
    dry_run: bool

    @property
    def kept(self) -> int:
        """Files kept, whatever the reason."""
        return sum(self.kept_reasons.values())


def prune_raw_files(
    ledger: Ledger, volume: Volume, block_shape: tuple[int, int, int], dry_run: bool = True
) -> RawPruneResult:
    """Delete the raw files whose every block is shipped; returns what was (or would be) deleted."""
    records = {r.block_id: r for r in ledger.blocks(volume.source.name)}
    done_files: dict[Path, list[str]] = {}
    needed: set[Path] = set()
    tail: set[Path] = set()
    blocks: dict[str, BlockRef] = {}
    for block in block_grid(volume.source.name, volume.shape, block_shape):
        keys = volume.storage_keys(block.bounds)
        if keys is None:
            return RawPruneResult([], {}, dry_run)  # files not inspectable: never guess
        record = records.get(block.block_id)
        if block.z1 - block.z0 < block_shape[0]:
            tail.update(keys)
        elif record is not None and record.state in SHIPPED_STATES and record.block == block:
            blocks[block.block_id] = block
            for key in keys:
                done_files.setdefault(key, []).append(block.block_id)
        else:
            needed.update(keys)
    kept = {KEPT_TAIL: len({p for p in tail if p.is_file()})}
    kept[KEPT_UNSHIPPED] = len({p for p in needed - tail if p.is_file()})
    candidates = sorted(path for path in done_files if path not in needed and path not in tail and path.is_file())
    checked: dict[str, bool] = {}
    deletable: list[Path] = []
    for path in candidates:
        if all(_still_shipped(ledger, volume, blocks[b], records[b].raw_sha256, checked) for b in done_files[path]):
            deletable.append(path)
        else:
            kept[KEPT_CHANGED] = kept.get(KEPT_CHANGED, 0) + 1
    for path in deletable:
        if not dry_run:
            path.unlink()
            failpoint("prune.raw")
        verb = "would delete" if dry_run else "deleted"
        for block_id in done_files[path]:
            ledger.note(block_id, f"raw file {verb}: {path}")
    return RawPruneResult(deletable, {why: count for why, count in kept.items() if count}, dry_run)


def _still_shipped(
    ledger: Ledger, volume: Volume, block: BlockRef, shipped_sha256: str | None, checked: dict[str, bool]
) -> bool:
    """Whether the block's raw data now is what was shipped (read once per block, noted if not)."""
    if block.block_id not in checked:
        try:
            same = shipped_sha256 is not None and array_sha256(volume.read(block.bounds)) == shipped_sha256
            why = "raw data differs from what was shipped"
        except VolumeError as exc:
            same, why = False, f"raw data unreadable ({exc})"
        if not same:
            ledger.note(block.block_id, f"raw files kept: {why}")
        checked[block.block_id] = same
    return checked[block.block_id]
