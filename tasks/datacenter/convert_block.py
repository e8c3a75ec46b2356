"""One block of ``emzip convert``, as a worker does it: read, code, place in the archive, level 1.

``convert_block`` runs in the converting process (one worker) or on a Dask worker (``--workers``,
``--cluster``): it reads the block from the source with TensorStore, codes it with the
conversion's model (``codec.shared``: decided on the first block, reused while it fits), writes
it as the archive's chunk and reads it back through zarr (``tasks.datacenter.archive.place_block``),
and writes the level-1 voxels over it where the grid allows. Only ids, paths and the model cross
between the converting process and its workers; the converting process keeps the ledger.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codec.api import encode
from codec.settings import Settings
from tasks.datacenter.archive import place_block
from tasks.datacenter.omezarr import Image
from tasks.datacenter.pyramid import first_level_from_block
from tasks.source.grid import BlockRef
from tasks.source.revisions import raw_stamp
from tasks.source.volumes import VolumeSource, open_volume
from tasks.store.checksums import array_sha256
from tasks.store.failpoints import failpoint

if TYPE_CHECKING:
    from codec.shared import SharedModel

__all__ = ["ConvertJob", "ConvertedBlock", "convert_block"]


@dataclass(frozen=True)
class ConvertJob:
    """One block to convert: the source, the block, where it goes; no voxels."""

    source: dict[str, Any]
    block: dict[str, Any]
    archive: str
    grid: tuple[int, int, int]
    settings: Settings
    image: Image | None


@dataclass(frozen=True)
class ConvertedBlock:
    """What the ledger records of a converted block."""

    codec: str
    raw_sha256: str
    raw_bytes: int
    compressed_sha256: str
    compressed_bytes: int
    stamp: str | None
    level_one: bool
    """The level-1 voxels over the block were written from it (the pyramid pass starts at level 2)."""
    seconds: float
    shared: SharedModel | None = field(repr=False)


def convert_block(job: ConvertJob, shared: SharedModel | None) -> ConvertedBlock:
    """Read, code, place and read back one block (``RestoreError`` if it does not read back identical)."""
    from tasks.datacenter.omezarr import base_array

    started = time.monotonic()
    block = BlockRef.from_json(job.block)
    archive = Path(job.archive)
    volume = open_volume(VolumeSource.from_json(job.source))
    stamp = raw_stamp(volume, block)  # before the read (tasks.source.revisions)
    data = volume.read(block.bounds)
    result = encode(data, job.settings, shared=shared)
    failpoint("convert.coded")
    digest = hashlib.sha256(result.data).hexdigest()
    raw_sha256 = array_sha256(data)
    place_block(base_array(archive), block, job.grid, result.data, digest, raw_sha256)
    image = job.image
    level_one = image is not None and first_level_from_block(archive, image.levels, job.grid, block.bounds, data)
    return ConvertedBlock(
        codec=result.codec,
        raw_sha256=raw_sha256,
        raw_bytes=data.nbytes,
        compressed_sha256=digest,
        compressed_bytes=len(result.data),
        stamp=stamp,
        level_one=level_one,
        seconds=time.monotonic() - started,
        shared=result.shared,
    )
