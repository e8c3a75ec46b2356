"""Carry restored blocks up their volumes' pyramids: every chunk a pending footprint touches, level by level.

The restore flow (chunks shared out as Prefect tasks on its task runner: threads, or Dask
workers) and ``emzip convert`` (in its own process) both call ``carry_up``. Footprints leave the
ledger only when every level above them is recomputed, so a pass killed anywhere is done again,
whole, by the next run, and gives the same bytes (``tasks.datacenter.pyramid``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tasks.datacenter.destination import RestoreError
from tasks.datacenter.omezarr import read_image, set_window
from tasks.datacenter.pyramid import chunks_to_update, update_chunks, value_range
from tasks.store.diskspace import out_of_space
from tasks.store.ledger import Ledger

__all__ = ["CHUNKS_PER_TASK", "Chunk", "carry_up", "groups_of", "recompute_chunks"]

Chunk = tuple[int, int, int]
#: The most chunks one pyramid task recomputes (a 64x128x128 chunk reads 1 MiB below it: ~10 ms).
CHUNKS_PER_TASK = 64

RunLevel = Callable[[Path, int, list[list[Chunk]]], None]
"""Recompute every group of chunks of one level of one image (each group may go to another worker)."""


def groups_of(chunks: list[Chunk], size: int = CHUNKS_PER_TASK) -> list[list[Chunk]]:
    """``chunks`` in order, cut into groups of at most ``size``."""
    return [chunks[i : i + size] for i in range(0, len(chunks), size)]


def recompute_chunks(image_path: Path, level: int, chunks: list[Chunk]) -> int:
    """Recompute ``chunks`` of one level from the level below, the geometry read from the image's
    own metadata (a worker gets only the path and the indices); returns the chunks written."""
    image = read_image(image_path)
    if image is None:
        raise RestoreError(f"{image_path}: not an OME-Zarr image with a pyramid")
    if not 1 <= level < len(image.levels):
        raise RestoreError(f"{image_path}: no pyramid level {level} (it has {len(image.levels) - 1})")
    return update_chunks(image_path, image.levels, image.chunk, level, chunks, image.archive)


def carry_up(ledger: Ledger, image_of: Callable[[str], Path], run_level: RunLevel) -> dict[str, str]:
    """Recompute every pending volume's touched chunks, level 1 first, then its display window.

    ``image_of`` maps a volume name to its image's path. Returns volume -> why its pass did not
    finish (its footprints stay pending for the next run); a full disk is raised, as for blocks.
    """
    unfinished: dict[str, str] = {}
    for volume, footprints in ledger.pyramid_pending().items():
        try:
            image_path = image_of(volume)
            image = read_image(image_path)
            if image is not None:
                plan = chunks_to_update(image.levels, image.chunk, footprints)
                for level in range(1, len(image.levels)):
                    if plan[level]:
                        run_level(image_path, level, groups_of(sorted(plan[level])))
                window = value_range(image_path, len(image.levels) - 1, image.archive)
                if window is not None:
                    set_window(image, window)
        except Exception as exc:
            if out_of_space(exc):
                raise
            unfinished[volume] = f"{type(exc).__name__}: {exc}"
            continue
        ledger.clear_pyramid(volume, footprints)
    return unfinished
