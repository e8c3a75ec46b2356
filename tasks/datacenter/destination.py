"""The data center's restored volume: a sharded zarr v3 array written one block at a time.

The array keeps the acquisition's dtype, its (z, y, x) dimension names, and its metadata (voxel
size, units, where it came from) in the zarr attributes. Shards are the size of a block (a block
no larger than the inner chunk is a plain chunk: no shard), so one block's write replaces whole
files, each written by TensorStore through a temporary name and
a rename; a block is read back through zarr-python (the public zarr API) and its sha256 compared
with the provenance record before anyone may call it restored. The array grows (never shrinks)
as blocks of a growing acquisition arrive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts
import zarr

from tasks.source.grid import BlockRef
from tasks.store.checksums import array_sha256
from tasks.store.failpoints import failpoint

__all__ = ["RestoreError", "open_destination", "write_block"]


class RestoreError(Exception):
    """A block could not be written into the destination volume, or did not read back identical."""


def _largest_divisor_at_most(value: int, limit: int) -> int:
    for candidate in range(min(value, limit), 0, -1):
        if value % candidate == 0:
            return candidate
    return 1


#: How a chunk's voxels are coded (inside a shard, or as the chunk where no shard is needed).
CHUNK_CODECS: list[dict[str, Any]] = [
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "zstd", "configuration": {"level": 3}},
]


def volume_codecs(block_shape: tuple[int, ...], inner: tuple[int, ...]) -> list[dict[str, Any]]:
    """The codecs of a restored volume's array: a block-sized shard of ``inner`` chunks, or, where
    the inner chunk is the whole block, plain chunks (a shard of one chunk is only an index to read)."""
    if tuple(inner) == tuple(block_shape):
        return CHUNK_CODECS
    return [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": list(inner),
                "codecs": CHUNK_CODECS,
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
            },
        }
    ]


def open_destination(
    path: str | Path,
    shape: tuple[int, int, int],
    dtype: np.dtype[Any] | str,
    block_shape: tuple[int, int, int],
    attributes: dict[str, Any] | None = None,
    context: ts.Context | None = None,
) -> ts.TensorStore:
    """Open the destination zarr v3 volume, creating it on first use and growing it to ``shape``.

    An existing array with another dtype is an error (never silently mixed).
    """
    path = Path(path)
    dtype = np.dtype(dtype)
    inner = tuple(_largest_divisor_at_most(b, limit) for b, limit in zip(block_shape, (64, 128, 128), strict=True))
    spec: dict[str, Any] = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path)},
    }
    if not (path / "zarr.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "shape": list(shape),
            "data_type": dtype.name,
            "dimension_names": ["z", "y", "x"],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(block_shape)}},
            "codecs": volume_codecs(block_shape, inner),
            "attributes": attributes or {},
        }
        try:
            return ts.open({**spec, "metadata": metadata}, create=True, open=True, context=context).result()
        except ValueError as exc:
            raise RestoreError(f"{path}: cannot create destination volume: {exc}") from exc
    try:
        store = ts.open(spec, open=True, context=context).result()
    except ValueError as exc:
        raise RestoreError(f"{path}: cannot open destination volume: {exc}") from exc
    if np.dtype(store.dtype.numpy_dtype) != dtype:
        raise RestoreError(f"{path}: destination holds {store.dtype.name}, block is {dtype.name}")
    if any(s > c for s, c in zip(shape, store.shape, strict=True)):
        grown = [max(s, c) for s, c in zip(shape, store.shape, strict=True)]
        store = store.resize(exclusive_max=grown, expand_only=True).result()
    return store


def write_block(store: ts.TensorStore, block: BlockRef, data: np.ndarray, expected_sha256: str) -> None:
    """Write one decoded block, read it back, and check its sha256 against the record."""
    if data.shape != block.shape:
        raise RestoreError(f"{block.block_id}: decoded shape {data.shape} does not match the block {block.shape}")
    actual = array_sha256(data)
    if actual != expected_sha256:
        raise RestoreError(
            f"{block.block_id}: decoded data sha256 {actual[:12]} differs from the record {expected_sha256[:12]}"
        )
    (z0, z1), (y0, y1), (x0, x1) = block.bounds
    try:
        store[z0:z1, y0:y1, x0:x1].write(data).result()
    except ValueError as exc:
        raise RestoreError(f"{block.block_id}: writing into the destination failed: {exc}") from exc
    failpoint("restore.write")
    # Read back from disk through the public zarr API (zarr-python, no cache shared with the
    # writer): what any analysis tool will read is what the record promises.
    location = store.kvstore.path if store.kvstore is not None else None
    try:
        stored = zarr.open_array(location, mode="r")[z0:z1, y0:y1, x0:x1]
    except Exception as exc:  # zarr raises many types; all mean "does not read back"
        raise RestoreError(f"{block.block_id}: reading the destination back failed: {exc}") from exc
    readback = array_sha256(np.asarray(stored))
    if readback != expected_sha256:
        raise RestoreError(
            f"{block.block_id}: destination read back sha256 {readback[:12]}, expected {expected_sha256[:12]}"
        )
