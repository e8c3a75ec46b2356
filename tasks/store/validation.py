"""Validation of everything that arrives from outside before any of it is used.

The data center's inbox is a network endpoint other people's transfers can write into, and the
edge derives names from folder and file names it did not choose. So a provenance record is data
to check, not instructions: its schema and version, a volume name from a safe character set (no
separators, no leading dot, no ``..``), a block id that is exactly what its bounds say, bounds
inside the volume's shape and on its block grid, shapes and dtypes within limits, sizes that
fit the dtype, and the folder and file names it arrived under (``tasks.store.names`` checks names and
keeps every path built from them inside its root). Anything refused raises ``UnsafeInputError``
naming the file and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.source.grid import BlockRef, versioned_stem
from tasks.store.names import UnsafeInputError, check_volume_name

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ACQUISITION = re.compile(r"[0-9a-f]{32}")
#: Largest extent accepted on any axis of a volume: 2^20 voxels (4 mm at 4 nm, beyond any EM
#: volume today). A record may grow its restored volume, for good: the limit bounds what a
#: malformed record can make the data center allocate.
MAX_EXTENT = 1 << 20
#: Largest block version accepted (a block coded again a million times is not a real acquisition).
MAX_VERSION = 1 << 20
#: Largest block accepted, in voxels and per axis (the edge codes blocks of 64 x 512 x 512).
MAX_BLOCK_VOXELS = 1 << 30
MAX_BLOCK_EXTENT = 1 << 16
#: Element types a restored volume may hold (the container's own list, native little-endian).
DTYPES = ("|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8", "|b1")
RECORD_VERSIONS = (1,)

__all__ = ["DTYPES", "UnsafeInputError", "ValidBlock", "validate_record"]


@dataclass(frozen=True)
class ValidBlock:
    """What a validated record promises about its block."""

    block: BlockRef
    dtype: np.dtype[Any]
    volume_shape: tuple[int, int, int]
    block_shape: tuple[int, int, int]
    raw_sha256: str
    compressed_sha256: str
    compressed_bytes: int
    acquisition: str | None = None
    """The acquisition id the block came from (None in records from before acquisition ids)."""
    version: int = 1
    """The block's version (``block.version``; 1 in records from before versions)."""


def _field(document: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(document, dict) or key not in document:
        raise UnsafeInputError(f"{where}: field {key!r} is missing")
    value = document[key]
    # bool is an int to Python; never accept it where a number is meant
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise UnsafeInputError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _triple(value: Any, where: str, low: int, high: int) -> tuple[int, int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value)
    ):
        raise UnsafeInputError(f"{where}: expected three integers in [{low}, {high}], got {value!r}")
    return value[0], value[1], value[2]


def _sha(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise UnsafeInputError(f"{where}: not a lowercase hex sha256")
    return value


def validate_record(record: Any, record_path: Path, container_path: Path | None = None) -> ValidBlock:
    """Check a received provenance record; returns what it promises or raises ``UnsafeInputError``.

    ``container_path`` (the ``.emz`` that arrived with it) must sit in a folder named after the
    record's volume, under the record's block's file stem (its size and sha256 are checked by the
    caller: a mismatch there usually means the file is still arriving).
    """
    where = str(record_path)
    if not isinstance(record, dict):
        raise UnsafeInputError(f"{where}: not a JSON object")
    version = _field(record, "record_version", int, where)
    if version not in RECORD_VERSIONS:
        raise UnsafeInputError(f"{where}: record version {version} is not one of {RECORD_VERSIONS}")
    block = _field(record, "block", dict, where)
    volume = _field(record, "volume", dict, where)
    encoding = _field(record, "encoding", dict, where)
    name = check_volume_name(_field(block, "volume", str, f"{where}: block"), where)
    if _field(volume, "name", str, f"{where}: volume") != name:
        raise UnsafeInputError(f"{where}: block volume {name!r} differs from the volume name {volume['name']!r}")
    volume_shape = _triple(_field(volume, "shape", list, where), f"{where}: volume shape", 1, MAX_EXTENT)
    grid = _triple(_field(volume, "block_shape", list, where), f"{where}: block_shape", 1, MAX_BLOCK_EXTENT)
    bounds = _field(block, "bounds", list, f"{where}: block")
    if len(bounds) != 3 or not all(isinstance(b, list) and len(b) == 2 for b in bounds):
        raise UnsafeInputError(f"{where}: block bounds must be three [start, stop] pairs, got {bounds!r}")
    starts = _triple([b[0] for b in bounds], f"{where}: block bounds (starts)", 0, MAX_EXTENT)
    stops = _triple([b[1] for b in bounds], f"{where}: block bounds (stops)", 1, MAX_EXTENT)
    ref = BlockRef(name, starts[0], stops[0], starts[1], stops[1], starts[2], stops[2])
    for axis, (start, stop, extent, step) in enumerate(zip(starts, stops, volume_shape, grid, strict=True)):
        if not start < stop <= extent:
            raise UnsafeInputError(f"{where}: block bounds {bounds} lie outside the volume shape {list(volume_shape)}")
        if start % step or stop != min(start + step, extent):
            raise UnsafeInputError(f"{where}: block bounds on axis {axis} are not a cell of the grid {list(grid)}")
    if ref.voxels > MAX_BLOCK_VOXELS:
        raise UnsafeInputError(f"{where}: block of {ref.voxels} voxels is over the limit {MAX_BLOCK_VOXELS}")
    if _field(block, "id", str, f"{where}: block") != ref.block_id:
        raise UnsafeInputError(f"{where}: block id {block['id']!r} does not match its bounds ({ref.block_id!r})")
    if _field(block, "shape", list, f"{where}: block") != list(ref.shape):
        raise UnsafeInputError(f"{where}: block shape {block['shape']!r} does not match its bounds")
    dtype_text = _field(block, "dtype", str, f"{where}: block")
    if dtype_text not in DTYPES:
        raise UnsafeInputError(f"{where}: dtype {dtype_text!r} is not one of {', '.join(DTYPES)}")
    dtype = np.dtype(dtype_text)
    raw_bytes = _field(encoding, "raw_bytes", int, f"{where}: encoding")
    if raw_bytes != ref.voxels * dtype.itemsize:
        raise UnsafeInputError(f"{where}: raw_bytes {raw_bytes} does not fit a {dtype_text} block of {ref.shape}")
    block_version = block.get("version", 1)
    if not isinstance(block_version, int) or isinstance(block_version, bool) or not 1 <= block_version <= MAX_VERSION:
        raise UnsafeInputError(f"{where}: block version {block_version!r} is not an integer in [1, {MAX_VERSION}]")
    compressed_bytes = _field(encoding, "compressed_bytes", int, f"{where}: encoding")
    if compressed_bytes <= 0:
        raise UnsafeInputError(f"{where}: compressed_bytes {compressed_bytes} is not positive")
    valid = ValidBlock(
        block=ref,
        dtype=dtype,
        volume_shape=volume_shape,
        block_shape=grid,
        raw_sha256=_sha(encoding.get("raw_sha256"), f"{where}: encoding raw_sha256"),
        compressed_sha256=_sha(encoding.get("compressed_sha256"), f"{where}: encoding compressed_sha256"),
        compressed_bytes=compressed_bytes,
        acquisition=_acquisition(volume, where),
        version=block_version,
    )
    if container_path is not None:
        _check_arrival(valid, record_path, container_path)
    return valid


def _acquisition(volume: dict[str, Any], where: str) -> str | None:
    """The record's acquisition id (``volume.source.acquisition.id``), None when the record has none."""
    source = volume.get("source")
    raw = source.get("acquisition") if isinstance(source, dict) else None
    if raw is None:
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    if not isinstance(value, str) or not _ACQUISITION.fullmatch(value):
        raise UnsafeInputError(f"{where}: volume source acquisition id is not 32 lowercase hex digits")
    return value


def _check_arrival(valid: ValidBlock, record_path: Path, container_path: Path) -> None:
    """The files arrived under the names the record gives, as regular files."""
    where = str(record_path)
    stem = versioned_stem(valid.block, valid.version)
    if container_path.parent.name != valid.block.volume or container_path.stem != stem:
        raise UnsafeInputError(
            f"{where}: describes {valid.block.block_id} but arrived as "
            f"{container_path.parent.name}/{container_path.name}"
        )
    if container_path.is_symlink() or record_path.is_symlink():
        raise UnsafeInputError(f"{where}: received files must be regular files, not symbolic links")
