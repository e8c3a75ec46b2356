"""The data center's archive: a zarr v3 array whose chunk files are the received containers.

The edge ships about 4.7 bits per voxel (FlyEM); decoding into a zstd zarr (about 6.3) would give
a third of that back at the last step. An archive keeps the savings: its chunk grid is the block
grid, its array-to-bytes codec is emzip (``codec.zarr_codec``), and each block's chunk file is the
shipped container itself, copied atomically and checksummed against its provenance record, never
re-encoded. ``zarr.open_array`` (zarr-python with emzip installed), dask and napari read it
directly. A block is archived only after it reads back through the public zarr API with the raw
sha256 its record promises. Dimension names, voxel size, units and provenance are in the
attributes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from codec.settings import Settings
from tasks.datacenter.destination import RestoreError
from tasks.source.grid import BlockRef, grids_agree
from tasks.store.atomic import atomic_write_bytes, atomic_write_json
from tasks.store.checksums import array_sha256, file_sha256
from tasks.store.sidecar import sidecar

__all__ = ["archive_metadata", "chunk_path", "metadata_lock", "open_archive", "place_block"]


def archive_metadata(
    shape: tuple[int, int, int], dtype: np.dtype[Any], block_shape: tuple[int, int, int], attributes: dict[str, Any]
) -> dict[str, Any]:
    """The archive's ``zarr.json``: chunks = blocks, emzip codec, keys ``c/<z>/<y>/<x>``."""
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": np.dtype(dtype).name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(block_shape)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "emzip", "configuration": {"settings": Settings().to_json()}}],
        "dimension_names": ["z", "y", "x"],
        "attributes": attributes,
    }


def open_archive(
    path: Path,
    shape: tuple[int, int, int],
    dtype: np.dtype[Any],
    block_shape: tuple[int, int, int],
    attributes: dict[str, Any],
    locked: bool = False,
) -> None:
    """Create the archive's metadata, or check an existing one agrees and grow it to ``shape``.

    Under an exclusive lock (``metadata_lock``): two processes growing it at once each read the
    other's growth, never write over it. ``locked``: the caller already holds the lock of the
    image the archive is level 0 of (``tasks.datacenter.omezarr.open_image``).
    """
    if locked:
        _open_archive_locked(path, shape, dtype, block_shape, attributes)
        return
    with metadata_lock(path):
        _open_archive_locked(path, shape, dtype, block_shape, attributes)


@contextlib.contextmanager
def metadata_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``zarr.json.lock`` in the node's sidecar folder (``tasks.store.sidecar``,
    beside the node, never in it; released when the process dies): one process at a time changes
    a zarr node's metadata (an archive's, or an OME-Zarr group's)."""
    path.mkdir(parents=True, exist_ok=True)
    with sidecar(path, "zarr.json.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _open_archive_locked(
    path: Path,
    shape: tuple[int, int, int],
    dtype: np.dtype[Any],
    block_shape: tuple[int, int, int],
    attributes: dict[str, Any],
) -> None:
    metadata_path = path / "zarr.json"
    if not metadata_path.exists():
        atomic_write_json(metadata_path, archive_metadata(shape, dtype, block_shape, attributes))
        return
    try:
        metadata = json.loads(metadata_path.read_text())
        grid = metadata["chunk_grid"]["configuration"]["chunk_shape"]
        held = (metadata["data_type"], grid, metadata["codecs"][0]["name"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise RestoreError(f"{metadata_path}: not an emzip archive's metadata ({exc})") from exc
    agree = grids_agree(
        tuple(grid), tuple(block_shape), tuple(max(a, b) for a, b in zip(metadata["shape"], shape, strict=True))
    )
    if held[0] != np.dtype(dtype).name or held[2] != "emzip" or not agree:
        raise RestoreError(
            f"{path}: archive holds {held[0]} in chunks {held[1]} coded {held[2]}; "
            f"the block is {np.dtype(dtype).name} on the grid {list(block_shape)}"
        )
    grown = [max(a, b) for a, b in zip(metadata["shape"], shape, strict=True)]
    if grown != metadata["shape"]:
        atomic_write_json(metadata_path, {**metadata, "shape": grown})


def chunk_path(archive: Path, block: BlockRef, block_shape: tuple[int, int, int]) -> Path:
    """Where a block's container lives in the archive (zarr v3 default keys: ``c/<z>/<y>/<x>``)."""
    index = (block.z0 // block_shape[0], block.y0 // block_shape[1], block.x0 // block_shape[2])
    return archive.joinpath("c", *(str(i) for i in index))


def place_block(
    archive: Path,
    block: BlockRef,
    block_shape: tuple[int, int, int],
    container: bytes,
    compressed_sha256: str,
    raw_sha256: str,
) -> np.ndarray:
    """Write a container (the shipped bytes) as the block's chunk, then read it back through zarr.

    The write is atomic and checked against ``compressed_sha256``; the read-back, through
    ``zarr.open_array``, against ``raw_sha256``. Returns the voxels read back (the pyramid's
    first level is computed from them, not from a second decode). Raises ``RestoreError`` naming
    the chunk; a chunk that does not read back is removed (absent, to be placed again, never wrong).
    """
    import zarr  # the pipeline's only zarr-python reader; imported here so tasks load without it

    target = chunk_path(archive, block, block_shape)
    if hashlib.sha256(container).hexdigest() != compressed_sha256:
        raise RestoreError(f"{block.block_id}: the container is not the one its record describes")
    atomic_write_bytes(target, container)
    problem = None
    voxels = np.zeros(0, np.uint8)
    if file_sha256(target) != compressed_sha256:
        problem = "does not hold the shipped container"
    else:
        (z0, z1), (y0, y1), (x0, x1) = block.bounds
        try:
            voxels = np.asarray(zarr.open_array(str(archive), mode="r")[z0:z1, y0:y1, x0:x1])
            readback = array_sha256(voxels)
            if readback != raw_sha256:
                problem = f"reads back sha256 {readback[:12]}, expected {raw_sha256[:12]}"
        except Exception as exc:  # zarr and the codec raise many types; all mean "does not read back"
            problem = f"does not read back: {exc}"
    if problem is not None:
        target.unlink(missing_ok=True)  # absent (restored again later), never wrong
        raise RestoreError(f"{block.block_id}: archive chunk {target} {problem}")
    return voxels
