"""Safe pruning of raw acquisition files once every block that uses them is shipped.

Off by default. A storage file (slice image, chunk or shard) may be deleted only when every block
of the volume's grid that reads from it is ``shipped`` (or ``restored``) in the ledger: shipped
means the container was verified by a separate decode and its checksum confirmed at the
destination, never mere existence. Files also used by a block still pending, failed or not yet
discovered are kept. ``dry_run`` reports without deleting; every decision is logged in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.failpoints import failpoint
from tasks.grid import block_grid
from tasks.ledger import Ledger
from tasks.volumes import Volume

DONE_STATES = ("shipped", "restored")

__all__ = ["RawPruneResult", "prune_raw_files"]


@dataclass(frozen=True)
class RawPruneResult:
    """Files deleted (or, in a dry run, deletable) and how many were kept because still needed."""

    files: list[Path]
    kept: int
    dry_run: bool


def prune_raw_files(
    ledger: Ledger, volume: Volume, block_shape: tuple[int, int, int], dry_run: bool = True
) -> RawPruneResult:
    """Delete the raw files whose every block is shipped; returns what was (or would be) deleted."""
    states = {r.block_id: r.state for r in ledger.blocks(volume.source.name)}
    done_files: dict[Path, list[str]] = {}
    needed: set[Path] = set()
    for block in block_grid(volume.source.name, volume.shape, block_shape):
        keys = volume.storage_keys(block.bounds)
        if keys is None:
            return RawPruneResult([], 0, dry_run)  # files not inspectable: never guess
        if states.get(block.block_id) in DONE_STATES:
            for key in keys:
                done_files.setdefault(key, []).append(block.block_id)
        else:
            needed.update(keys)
    deletable = sorted(path for path in done_files if path not in needed and path.is_file())
    for path in deletable:
        if not dry_run:
            path.unlink()
            failpoint("prune.raw")
        verb = "would delete" if dry_run else "deleted"
        for block_id in done_files[path]:
            ledger.note(block_id, f"raw file {verb}: {path}")
    return RawPruneResult(deletable, len(set(done_files) & needed), dry_run)
