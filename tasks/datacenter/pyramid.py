"""The resolution pyramid of a restored volume: which levels, and how each level's chunks are computed.

Level 0 is the restored volume. Level ``L`` halves y and x of level ``L - 1``, and z as well where
the voxel size says z is then no coarser than y and x (isotropic FIB-SEM halves z at every level;
ssTEM at 50 nm x 4 nm keeps z until y and x reach 64 nm). Levels stop at the first one whose y
and x fit in one chunk and in 128 voxels (``TOP_LEVEL_SIZE``). Every level has the block grid's
chunk (one grid for all levels: as a volume grows, no chunk straddles two chunk locks). A voxel of
level ``L`` is the mean of the (up to 8) voxels of level ``L - 1`` under it that lie inside the
volume, in integers, rounded half up: the same bytes in whatever order blocks arrive, because a
chunk is always recomputed whole from the level below.

Who computes what: every restored block leaves its footprint pending in the restore ledger
(before it is written); the restore flow then recomputes, level by level, every chunk that a
pending footprint touches, reading the level below as it is on disk, and clears the footprints
only when the top level is done. A restore killed anywhere resumes to the same pyramid. Each
chunk is computed under a byte-range lock of its own, so two restores on one volume never leave a
chunk computed from data older than the last block written under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from tasks.store.failpoints import failpoint
from tasks.store.sidecar import sidecar

__all__ = [
    "TOP_LEVEL_SIZE",
    "WHOLE",
    "Level",
    "all_chunks",
    "chunk_bounds",
    "chunks_to_update",
    "create_or_grow_level",
    "first_level_from_block",
    "footprint_key",
    "level_plan",
    "mean_pool",
    "touched_chunks",
    "update_chunks",
    "value_range",
    "whole_from",
]

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

#: The pyramid ends at the first level whose slice fits in this many voxels (and in one chunk).
TOP_LEVEL_SIZE = 128


@dataclass(frozen=True)
class Level:
    """One pyramid level: its factor from level 0 per axis (z, y, x) and its shape."""

    factor: tuple[int, int, int]
    shape: tuple[int, int, int]


def level_plan(
    shape: tuple[int, int, int], chunk: tuple[int, int, int], voxel_size: tuple[float, float, float] | None
) -> list[Level]:
    """The levels of a volume of ``shape`` (level 0 first), with chunks of ``chunk`` at every level.

    Levels stop at the first whose y and x fit in one chunk and in ``TOP_LEVEL_SIZE``: a block
    grid as wide as the slice (a 250-wide volume gets 250-wide blocks) still gets an overview.
    Without a voxel size, z is never halved (an anisotropic stack must not be blurred across
    sections on a guess).
    """
    levels = [Level((1, 1, 1), shape)]
    top_y, top_x = min(chunk[1], TOP_LEVEL_SIZE), min(chunk[2], TOP_LEVEL_SIZE)
    while True:
        last = levels[-1]
        if last.shape[1] <= top_y and last.shape[2] <= top_x:
            return levels
        fz, fy, fx = last.factor
        if voxel_size is not None:
            vz, vy, vx = voxel_size
            if 2 * vz * fz <= max(vy * fy * 2, vx * fx * 2) and last.shape[0] > 1:
                fz *= 2
        factor = (fz, fy * 2, fx * 2)
        levels.append(Level(factor, tuple(math.ceil(s / f) for s, f in zip(shape, factor, strict=True))))  # type: ignore[arg-type]


def mean_pool(data: np.ndarray, step: tuple[int, int, int]) -> np.ndarray:
    """Mean of each ``step`` window (windows at the far edges hold fewer voxels), rounded half up.

    Exact integer arithmetic: the sum in int64, then ``(2 * sum + n) // (2 * n)``.
    """
    if not np.issubdtype(data.dtype, np.integer):
        raise TypeError(f"mean_pool takes integer voxels, not {data.dtype}")
    sums = data.astype(np.int64)
    counts = np.ones(data.shape, dtype=np.int64)
    for axis, size in enumerate(step):
        if size == 1:
            continue
        starts = np.arange(0, sums.shape[axis], size)
        sums = np.add.reduceat(sums, starts, axis=axis)
        counts = np.add.reduceat(counts, starts, axis=axis)
    return ((2 * sums + counts) // (2 * counts)).astype(data.dtype)


def _step(levels: list[Level], level: int) -> tuple[int, int, int]:
    below, here = levels[level - 1].factor, levels[level].factor
    return tuple(h // b for h, b in zip(here, below, strict=True))  # type: ignore[return-value]


def chunk_bounds(level: Level, chunk: tuple[int, int, int], index: tuple[int, int, int]) -> Box:
    """The voxels of ``level`` that chunk ``index`` covers (clipped to the level's shape)."""
    return tuple(  # type: ignore[return-value]
        (i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunk, level.shape, strict=True)
    )


def touched_chunks(levels: list[Level], chunk: tuple[int, int, int], footprint: Box) -> list[set[tuple[int, int, int]]]:
    """For each level above 0, the chunks whose voxels lie over ``footprint`` (level-0 voxels)."""
    touched: list[set[tuple[int, int, int]]] = [set()]
    for level in levels[1:]:
        ranges = []
        for (start, stop), f, c, s in zip(footprint, level.factor, chunk, level.shape, strict=True):
            first, last = start // f, min(math.ceil(stop / f), s) - 1
            ranges.append(range(first // c, last // c + 1) if last >= first else range(0))
        touched.append(set(itertools.product(*ranges)))  # type: ignore[arg-type]
    return touched


#: The footprint that stands for every chunk of some levels: ``*`` all of them, ``*3`` level 3 and up
#: (levels just added to a growing volume).
WHOLE = "*"


def whole_from(level: int) -> str:
    """The footprint for every chunk of ``level`` and the levels above it."""
    return f"{WHOLE}{level}"


def footprint_key(bounds: Box, from_level: int = 1) -> str:
    """A block's level-0 bounds as the ledger keeps them (``pyramid_pending.footprint``).

    ``from_level`` 2: level 1 over the block is already written (``first_level_from_block``),
    only the levels above it are pending (``2:[[z0,z1],[y0,y1],[x0,x1]]``).
    """
    bounds_json = json.dumps([list(axis) for axis in bounds], separators=(",", ":"))
    return bounds_json if from_level <= 1 else f"{from_level}:{bounds_json}"


def chunks_to_update(
    levels: list[Level], chunk: tuple[int, int, int], footprints: Iterable[str]
) -> list[set[tuple[int, int, int]]]:
    """Per level (index 0 unused), the chunks the pending ``footprints`` touch; ``WHOLE``: every chunk."""
    plan: list[set[tuple[int, int, int]]] = [set() for _ in levels]
    for footprint in footprints:
        if footprint.startswith(WHOLE):
            for index in range(max(int(footprint[1:] or 1), 1), len(levels)):
                plan[index] |= all_chunks(levels[index], chunk)
            continue
        prefix, _, bounds_json = footprint.rpartition(":")
        first = int(prefix or 1)
        bounds = tuple(tuple(int(v) for v in axis) for axis in json.loads(bounds_json))
        for index, touched in enumerate(touched_chunks(levels, chunk, bounds)):  # type: ignore[arg-type]
            if index >= first:
                plan[index] |= touched
    return plan


def all_chunks(level: Level, chunk: tuple[int, int, int]) -> set[tuple[int, int, int]]:
    """Every chunk of ``level``."""
    return set(itertools.product(*(range(math.ceil(s / c)) for s, c in zip(level.shape, chunk, strict=True))))  # type: ignore[arg-type]


def level_spec(path: Path) -> dict[str, Any]:
    """TensorStore's spec of a level array (zarr v3, zstd chunks)."""
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}


def create_or_grow_level(
    path: Path, shape: tuple[int, int, int], dtype: np.dtype[Any], chunk: tuple[int, int, int]
) -> None:
    """Create level array ``path`` (zstd zarr v3, chunks of ``chunk``) or grow it to ``shape``."""
    if not (path / "zarr.json").exists():
        metadata = {
            "shape": list(shape),
            "data_type": np.dtype(dtype).name,
            "dimension_names": ["z", "y", "x"],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 3}},
            ],
            "fill_value": 0,
        }
        ts.open({**level_spec(path), "metadata": metadata}, create=True, open=True).result()
        return
    store = ts.open(level_spec(path), open=True).result()
    if any(s > c for s, c in zip(shape, store.shape, strict=True)):
        grown = [max(s, c) for s, c in zip(shape, store.shape, strict=True)]
        store.resize(exclusive_max=grown, expand_only=True).result()


_thread_locks: dict[tuple[str, int, tuple[int, int, int]], threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def _chunk_lock(lock_path: Path, level: int, index: tuple[int, int, int]) -> Iterator[None]:
    """An exclusive lock on one chunk of one level: a thread lock (threads of this process) and a
    byte-range lock on ``lock_path`` (other processes, which POSIX locks do not tell apart by thread)."""
    key = (str(lock_path.resolve()), level, index)
    with _thread_locks_guard:
        local = _thread_locks.setdefault(key, threading.Lock())
    offset = (level << 48) + (index[0] << 32) + (index[1] << 16) + index[2]
    with local, lock_path.open("a") as handle:
        fcntl.lockf(handle.fileno(), fcntl.LOCK_EX, 1, offset)
        try:
            yield
        finally:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_UN, 1, offset)


def first_level_from_block(
    image: Path, levels: list[Level], chunk: tuple[int, int, int], bounds: Box, data: np.ndarray
) -> bool:
    """Write the level-1 voxels over one restored block from its voxels in memory; False if it cannot.

    It can when the block grid is a multiple of level 1's factor on every axis: every level-1
    voxel over the block then lies over this block alone, so what is written is exactly what
    ``update_chunks`` would compute from level 0, without reading (for an archive: decoding) level
    0 again. The level-1 chunks written are held under their chunk locks, one after another in
    order, because a chunk spans several blocks written by several workers.
    """
    if len(levels) < 2 or not np.issubdtype(data.dtype, np.integer):
        return False
    step = levels[1].factor
    if any(c % s for c, s in zip(chunk, step, strict=True)) or any(
        lo % s for (lo, _), s in zip(bounds, step, strict=True)
    ):
        return False
    pooled = mean_pool(data, step)
    region = tuple((lo // s, lo // s + n) for (lo, _), s, n in zip(bounds, step, pooled.shape, strict=True))
    target = ts.open(level_spec(image / "1"), open=True).result()
    for index in sorted(touched_chunks(levels, chunk, bounds)[1]):
        box = chunk_bounds(levels[1], chunk, index)
        part = tuple((max(a, c), min(b, d)) for (a, b), (c, d) in zip(box, region, strict=True))
        if any(stop <= start for start, stop in part):
            continue
        local = tuple(slice(a - r0, b - r0) for (a, b), (r0, _) in zip(part, region, strict=True))
        (z0, z1), (y0, y1), (x0, x1) = part
        with _chunk_lock(sidecar(image, "pyramid.lock"), 1, index):
            target[z0:z1, y0:y1, x0:x1].write(pooled[local]).result()
        failpoint("pyramid.block")
    return True


def _read_level(array_path: Path, archive: bool) -> Any:
    """A reader of a level's voxels: TensorStore, or zarr-python for an emzip archive's level 0."""
    if archive:
        import zarr

        return zarr.open_array(str(array_path), mode="r")
    return ts.open(level_spec(array_path), open=True).result()


def update_chunks(
    image: Path,
    levels: list[Level],
    chunk: tuple[int, int, int],
    level: int,
    chunks: Iterable[tuple[int, int, int]],
    base_is_archive: bool = False,
) -> int:
    """Recompute ``chunks`` of ``level`` from level ``level - 1`` as it is on disk; returns how many.

    ``image`` is the OME-Zarr group (levels in ``<image>/<n>``). The level below is read once per
    chunk, pooled by ``mean_pool`` and written whole (TensorStore writes a chunk file through a
    temporary name and a rename).
    """
    below = _read_level(image / str(level - 1), base_is_archive and level == 1)
    target = ts.open(level_spec(image / str(level)), open=True).result()
    step = _step(levels, level)
    below_shape = levels[level - 1].shape
    done = 0
    for index in sorted(chunks):
        box = chunk_bounds(levels[level], chunk, index)
        if any(stop <= start for start, stop in box):
            continue
        source = tuple(slice(a * s, min(b * s, n)) for (a, b), s, n in zip(box, step, below_shape, strict=True))
        with _chunk_lock(sidecar(image, "pyramid.lock"), level, index):
            raw = below[source]
            data = np.asarray(raw.read().result() if isinstance(raw, ts.TensorStore) else raw)
            pooled = mean_pool(data, step)
            (z0, z1), (y0, y1), (x0, x1) = box
            target[z0:z1, y0:y1, x0:x1].write(pooled).result()
        failpoint("pyramid.chunk")
        done += 1
    return done


def value_range(image: Path, level: int, base_is_archive: bool = False) -> tuple[float, float] | None:
    """The smallest and largest voxel of one level (None when it holds none), for the display window."""
    reader = _read_level(image / str(level), base_is_archive and level == 0)
    data = np.asarray(reader.read().result() if isinstance(reader, ts.TensorStore) else reader[...])
    if data.size == 0:
        return None
    return float(data.min()), float(data.max())
