"""``emzip convert``: an emzip-coded OME-Zarr copy of a volume already on disk, block by block.

The copy is the same OME-Zarr 0.5 image the data center restores into (``tasks.omezarr``): level
``0`` is the emzip archive, the levels above it its mean pyramid, brought up to date at the end
of every run (``tasks.pyramid_pass``).

The source (zarr v2/v3, N5, neuroglancer precomputed or a TIFF/PNG slice folder, through
TensorStore, ``tasks.volumes``) is only ever read. Each block is coded with the codec (its own
round-trip check), written as the block's chunk of the archive (``tasks.archive``: atomic, then
read back through zarr-python and compared by sha256 with the source block) and recorded in a
ledger beside the archive, so a conversion that is stopped or killed resumes where it was: blocks
already verified are not coded again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codec.api import encode
from codec.settings import Settings
from tasks.archive import place_block
from tasks.checksums import array_sha256
from tasks.failpoints import failpoint
from tasks.grid import block_grid, choose_block_shape
from tasks.ledger import Ledger, worker_identity
from tasks.omezarr import base_array, open_image
from tasks.pyramid import first_level_from_block, footprint_key, whole_from
from tasks.pyramid_pass import Chunk, carry_up, recompute_chunks
from tasks.targets import TargetError, read_target
from tasks.volumes import VolumeError, VolumeSource, open_volume

__all__ = ["ConvertReport", "convert_volume"]


@dataclass(frozen=True)
class ConvertReport:
    """What a conversion did: blocks converted now, already done before, and the archive's size."""

    archive: Path
    converted: int
    already_done: int
    blocks: int
    source_bytes: int
    archive_bytes: int


def convert_volume(
    source: VolumeSource,
    archive: Path,
    settings: Settings,
    block_shape: tuple[int, int, int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ConvertReport:
    """Convert ``source`` into the emzip archive ``archive`` (a ``.zarr`` folder); resumable.

    An existing archive is resumed only if it holds this acquisition (``VolumeError`` otherwise):
    a second source of the same folder name must never pass for the first one's blocks.
    """
    _check_same_acquisition(source, archive)
    volume = open_volume(source)
    grid = block_shape or choose_block_shape(volume.chunk, whole_slices=source.layout == "slices")
    attributes = {
        "voxel_size": list(volume.voxel_size) if volume.voxel_size else None,
        "units": volume.units,
        "emzip": {
            "converted_from": source.as_json(),
            "acquisition": source.acquisition.id if source.acquisition else None,
        },
    }
    opened = open_image(archive, "archive", volume.shape, volume.dtype, grid, attributes)
    base = base_array(archive)
    blocks = list(block_grid(source.name, volume.shape, grid))
    worker = worker_identity()
    converted = 0
    with Ledger(archive / "ledger.sqlite") as ledger:
        ledger.discover(blocks)
        already = len(ledger.blocks(states=("verified",)))
        if opened is not None and opened[1]:
            ledger.mark_pyramid(source.name, [whole_from(min(opened[1]))])
        try:
            while claimed := ledger.claim(worker, ("discovered", "encoded"), limit=1):
                record = claimed[0]
                data = volume.read(record.block.bounds)
                result = encode(data, settings)
                digest = hashlib.sha256(result.data).hexdigest()
                footprint = footprint_key(record.block.bounds)
                ledger.mark_pyramid(source.name, [footprint])
                place_block(base, record.block, grid, result.data, digest, array_sha256(data))
                image = opened[0] if opened is not None else None
                if image is not None and first_level_from_block(archive, image.levels, grid, record.block.bounds, data):
                    ledger.replace_pyramid(source.name, footprint, footprint_key(record.block.bounds, from_level=2))
                failpoint("convert.placed")
                # One transaction: a kill leaves the block discovered (coded again) or verified.
                steps = ("encoded", "verified") if record.state == "discovered" else ("verified",)
                ledger.advance_through(record.block_id, worker, steps, release=True, codec=result.codec)
                converted += 1
                if progress:
                    progress("convert", already + converted, len(blocks))
        finally:
            ledger.release_all(worker)
        unfinished = carry_up(ledger, lambda _volume: archive, _run_level)
    if unfinished:
        raise VolumeError(f"{archive}: pyramid not brought up to date (run convert again): {unfinished}")
    chunk_bytes = sum(p.stat().st_size for p in (base / "c").rglob("*") if p.is_file())
    return ConvertReport(
        archive=archive,
        converted=converted,
        already_done=already,
        blocks=len(blocks),
        source_bytes=int(volume.dtype.itemsize) * volume.shape[0] * volume.shape[1] * volume.shape[2],
        archive_bytes=chunk_bytes,
    )


def _run_level(image: Path, level: int, groups: list[list[Chunk]]) -> None:
    """One pyramid level's chunks, here in this process."""
    for group in groups:
        recompute_chunks(image, level, group)


def _check_same_acquisition(source: VolumeSource, archive: Path) -> None:
    """Refuse to resume an archive converted from another acquisition (or another folder, for an
    archive from before acquisition ids)."""
    try:
        existing = read_target(archive)
    except TargetError as exc:
        raise VolumeError(f"{archive}: cannot resume: {exc}") from exc
    if existing is None:
        return
    if existing.acquisition is not None:
        mine = source.acquisition.id if source.acquisition else None
        if mine != existing.acquisition:
            raise VolumeError(
                f"{archive}: holds acquisition {existing.acquisition[:12]}, not {source.location} "
                f"({(mine or 'unidentified')[:12]}); convert it into another archive"
            )
        return
    try:
        metadata = json.loads((base_array(archive) / "zarr.json").read_text())
        converted_from = metadata["attributes"]["emzip"]["converted_from"]
        location = converted_from["location"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VolumeError(f"{archive}: cannot tell which source it was converted from ({exc}); not resumed") from exc
    if location != source.location:
        raise VolumeError(f"{archive}: was converted from {location}, not {source.location}; use another archive")
