"""Which blocks of a (possibly still growing) acquisition may be read now.

A block is ready only when all of its data has been written and left alone:

- every file that holds it (slice image, chunk or shard) exists and has not been modified for
  ``settle_seconds``; or
- the acquisition has written its completion marker (``ACQUISITION_COMPLETE`` in the volume
  folder by default), or the caller says the volume is complete (data acquired earlier).

Blocks cut short in z by the current end of the volume wait for more slices until the volume is
complete; blocks cut short in y or x at the volume's edge are whole blocks and are handled like
any other. Writers that never write all-background chunks (zarr's ``write_empty_chunks=False``)
must write the marker, since a missing chunk is otherwise read as "not yet written".

The volume is re-opened for every scan, so its shape and metadata are always fresh. Slice files
still inside their settle time are not even opened: a half-written image is never read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import tensorstore as ts

from tasks.source.grid import BlockRef, block_grid
from tasks.source.volumes import Volume, VolumeSource, open_volume

DEFAULT_MARKER = "ACQUISITION_COMPLETE"
DEFAULT_SETTLE_SECONDS = 30.0

__all__ = ["DEFAULT_MARKER", "DEFAULT_SETTLE_SECONDS", "ScanReport", "scan_volume"]


@dataclass
class ScanReport:
    """The outcome of one scan: the opened volume, ready blocks, and why the others wait."""

    volume: Volume
    block_shape: tuple[int, int, int]
    complete: bool
    ready: list[BlockRef] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)


def marker_present(source: VolumeSource, marker: str | None) -> bool:
    """True when the acquisition's completion marker exists in the volume's folder."""
    return bool(marker) and (Path(source.location) / str(marker)).exists()


def _unsettled_reason(keys: list[Path], settled_before: float) -> str | None:
    for key in keys:
        try:
            stat = key.stat()
        except FileNotFoundError:
            return f"{key.name} not written yet"
        if stat.st_mtime > settled_before:
            return f"{key.name} modified {time.time() - stat.st_mtime:.1f} s ago"
    return None


def scan_volume(
    source: VolumeSource,
    block_shape: tuple[int, int, int],
    *,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    marker: str | None = DEFAULT_MARKER,
    assume_complete: bool = False,
    context: ts.Context | None = None,
    now: float | None = None,
) -> ScanReport:
    """Re-open the volume and sort its blocks into ready and waiting (with the reason)."""
    now = time.time() if now is None else now
    settled_before = now - settle_seconds
    complete = assume_complete or marker_present(source, marker)
    volume = open_volume(source, context, settled_before=None if complete else settled_before)
    report = ScanReport(volume=volume, block_shape=block_shape, complete=complete)
    for block in block_grid(source.name, volume.shape, block_shape):
        if block.z1 - block.z0 < block_shape[0] and not complete:
            report.waiting[block.block_id] = f"only {block.z1 - block.z0} of {block_shape[0]} slices so far"
            continue
        if complete:
            report.ready.append(block)
            continue
        keys = volume.storage_keys(block.bounds)
        if keys is None:
            report.waiting[block.block_id] = f"waiting for the completion marker {marker!r} (files not inspectable)"
            continue
        reason = _unsettled_reason(keys, settled_before)
        if reason is None:
            report.ready.append(block)
        else:
            report.waiting[block.block_id] = reason
    return report
