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
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codec.api import encode
from codec.settings import Settings
from tasks.datacenter.archive import place_block
from tasks.datacenter.destination import RestoreError
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

log = logging.getLogger(__name__)
#: The codec a learned chunk that does not read back is stored with instead.
CLASSIC = "jpegxl"


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
    """Read, code, place and read back one block (``RestoreError`` if it does not read back identical).

    A learned chunk that does not read back identical (an engine fault) is coded again with the
    classic codec and placed again: the same fallback as the codec's in-process verification,
    which the read-back makes redundant (one decode per block instead of two).
    """
    from tasks.datacenter.omezarr import base_array

    started = time.monotonic()
    block = BlockRef.from_json(job.block)
    archive = Path(job.archive)
    volume = open_volume(VolumeSource.from_json(job.source))
    stamp = raw_stamp(volume, block)  # before the read (tasks.source.revisions)
    data = volume.read(block.bounds)
    # No in-process verifying decode: the chunk's read-back through zarr below is the round trip.
    result = encode(data, replace(job.settings, verify=False), shared=shared)
    failpoint("convert.coded")
    raw_sha256 = array_sha256(data)
    digest = hashlib.sha256(result.data).hexdigest()
    try:
        place_block(base_array(archive), block, job.grid, result.data, digest, raw_sha256)
    except RestoreError as exc:
        if result.codec != "learned":
            raise
        # What the codec's own verification would do: the classic codec instead, checked in-process too.
        log.error("%s: the learned chunk did not read back (%s); stored with the classic codec", block.block_id, exc)
        result = encode(data, replace(job.settings, codec=CLASSIC, verify=True))
        digest = hashlib.sha256(result.data).hexdigest()
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
