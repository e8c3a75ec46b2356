"""Which blocks of a volume are not restored yet, and why: so that less than the source is never silent.

The data center knows a volume's shape and block grid from its target, and which block versions it
restored from its ledger; a one-shot run (``emzip run``) also knows, from the edge's ledger, which
version of each block the edge coded last. A block is missing when it was never received (or its
container was refused), when it failed, when it waits, or when the version restored is older than
the one the edge holds (a grown or changed block whose new version has not arrived).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tasks.source.grid import BlockRef, block_grid
from tasks.store.ledger import BlockRecord, Ledger

__all__ = ["datacenter_gaps", "refused_blocks", "run_gaps"]


def refused_blocks(refusals: Mapping[str, str], volume: str) -> dict[str, str]:
    """Block id -> why, for containers of ``volume`` refused at the data center (``Ledger.refusals``)."""
    found: dict[str, str] = {}
    for path, why in refusals.items():
        container = Path(path)
        if container.parent.name == volume and container.suffix == ".emz":
            found[f"{volume}/{container.name.split('.')[0]}"] = f"refused: {why}"
    return found


def _why(record: BlockRecord | None, refused: Mapping[str, str], block: BlockRef) -> str | None:
    """Why ``block`` (as the grid has it now) is not restored, or None when it is."""
    if record is None:
        return refused.get(block.block_id, "not received at the data center")
    if record.state != "restored":
        detail = f": {record.reason}" if record.reason else ""
        return refused.get(block.block_id, f"{record.state} at the data center{detail}")
    if record.block != block:
        return (
            f"restored version {record.version} covers z [{record.block.z0}, {record.block.z1}), the volume "
            f"now needs [{block.z0}, {block.z1}): its newer version has not arrived"
        )
    return None


def datacenter_gaps(
    ledger: Ledger, volume: str, shape: tuple[int, int, int], grid: tuple[int, int, int]
) -> dict[str, str]:
    """Block id -> why, for every block of ``volume``'s grid at ``shape`` not restored as it is now."""
    records = {r.block_id: r for r in ledger.blocks(volume)}
    refused = refused_blocks(ledger.refusals(), volume)
    gaps = {}
    for block in block_grid(volume, shape, grid):
        why = _why(records.get(block.block_id), refused, block)
        if why is not None:
            gaps[block.block_id] = why
    return gaps


def run_gaps(
    edge: Ledger, datacenter: Ledger, volume: str, shape: tuple[int, int, int], grid: tuple[int, int, int]
) -> dict[str, str]:
    """Block id -> why, for every block of the source (``shape`` on ``grid``) not restored as the edge last coded it."""
    at_edge = {r.block_id: r for r in edge.blocks(volume)}
    restored = {r.block_id: r for r in datacenter.blocks(volume)}
    refused = refused_blocks(datacenter.refusals(), volume)
    gaps = {}
    for block in block_grid(volume, shape, grid):
        coded = at_edge.get(block.block_id)
        if coded is None or coded.block != block:
            gaps[block.block_id] = "not coded at the edge yet (waiting for data)"
            continue
        if coded.state not in ("shipped", "restored"):
            detail = f": {coded.reason}" if coded.reason else ""
            gaps[block.block_id] = f"{coded.state} at the edge{detail}"
            continue
        here = restored.get(block.block_id)
        why = _why(here, refused, block)
        if why is None and here is not None and here.version != coded.version:
            why = f"restored version {here.version}, the edge shipped version {coded.version}"
        if why is not None:
            gaps[block.block_id] = why
    return gaps
