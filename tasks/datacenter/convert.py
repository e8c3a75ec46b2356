"""``emzip convert``: an emzip-coded OME-Zarr copy of a volume already on disk, block by block.

The copy is the same OME-Zarr 0.5 image the data center restores into (``tasks.datacenter.omezarr``): level
``0`` is the emzip archive, the levels above it its mean pyramid, brought up to date at the end
of every run (``tasks.datacenter.pyramid_pass``).

The source (zarr v2/v3, N5, neuroglancer precomputed or a TIFF/PNG slice folder, through
TensorStore, ``tasks.source.volumes``) is only ever read. Each block is coded with the codec (its own
round-trip check), written as the block's chunk of the archive (``tasks.datacenter.archive``: atomic, then
read back through zarr-python and compared by sha256 with the source block) and recorded in a
ledger beside the archive (``ledger_path``), so a conversion that is stopped or killed resumes where it was: blocks
already verified are not coded again.

A source is recognised by its content, not its path or inode: each converted block's raw sha256
(and its files' stamp, ``tasks.source.revisions``) is in the ledger, and a resume first checks the blocks
already converted against the source as it is now. A byte-identical copy resumes wherever it
lives; a different source is refused, naming the blocks that differ, before the archive is
touched. A block converted while the source was shorter than its extent (the tail) is coded again
as its next version once the source has grown.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from codec.settings import Settings
from tasks.datacenter.convert_block import ConvertJob
from tasks.datacenter.convert_pool import BlockPool, run_blocks
from tasks.datacenter.omezarr import base_array, open_image
from tasks.datacenter.pyramid import footprint_key, whole_from
from tasks.datacenter.pyramid_pass import Chunk, carry_up, recompute_chunks
from tasks.datacenter.targets import TargetError, read_target
from tasks.source.grid import block_grid, choose_block_shape, grids_agree
from tasks.source.revisions import grew_reason, raw_stamp, same_raw, slices_text
from tasks.source.volumes import Volume, VolumeError, VolumeSource, open_volume, portable_source
from tasks.store.failpoints import failpoint
from tasks.store.ledger import BlockRecord, Ledger, worker_identity
from tasks.store.sidecar import sidecar_dir

__all__ = ["LEDGER", "ConvertReport", "convert_volume", "ledger_path"]

#: The conversion's ledger, in the archive's sidecar folder (``tasks.store.sidecar``).
LEDGER = "ledger.sqlite"


def ledger_path(archive: Path) -> Path:
    """Where the conversion of ``archive`` keeps its ledger: beside the archive, not in it.

    A ledger from before (``<archive>/ledger.sqlite``, with its WAL files) is moved there first.
    """
    target = sidecar_dir(archive) / LEDGER
    old = archive / LEDGER
    if old.is_file() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm", ""):  # the database itself last: it is what says "there is a ledger"
            moved = archive / (LEDGER + suffix)
            if moved.exists():
                os.replace(moved, target.parent / (LEDGER + suffix))
    return target


@dataclass(frozen=True)
class ConvertReport:
    """What a conversion did: blocks converted now, already done before, the archive's size, and
    the blocks of the source not in the archive (id -> why; empty when it is complete)."""

    archive: Path
    converted: int
    already_done: int
    blocks: int
    source_bytes: int
    archive_bytes: int
    missing: dict[str, str]
    recoded: list[str]
    model_seconds: float = 0.0
    """Until the first block, which decides the model, was converted (0 when nothing trains)."""
    coding_seconds: float = 0.0
    """From then (or the start) until the last block was converted."""
    pyramid_seconds: float = 0.0
    """The pyramid pass above what the blocks wrote."""


def convert_volume(
    source: VolumeSource,
    archive: Path,
    settings: Settings,
    block_shape: tuple[int, int, int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    pool: BlockPool | None = None,
) -> ConvertReport:
    """Convert ``source`` into the emzip archive ``archive`` (a ``.zarr`` folder); resumable.

    Blocks are converted by ``pool`` (``tasks.datacenter.convert_pool``: in this process by
    default, or on Dask workers), the first alone: it decides the model every later block is
    coded with (``codec.shared``). This process keeps the ledger.

    An existing archive is resumed only if it holds this acquisition (``VolumeError`` otherwise):
    a second source of the same folder name must never pass for the first one's blocks.
    """
    volume = open_volume(source)
    grid = block_shape or _default_grid(volume, archive)
    if ledger_path(archive).is_file():  # a resume: the source must be the one converted so far
        source = _check_same_source(source, volume, grid, archive)
        volume = replace(volume, source=source)
    else:
        _check_same_acquisition(source, archive)
    attributes = {
        "voxel_size": list(volume.voxel_size) if volume.voxel_size else None,
        "units": volume.units,
        "emzip": {
            "converted_from": portable_source(source.as_json()),
            "acquisition": source.acquisition.id if source.acquisition else None,
        },
    }
    opened = open_image(archive, "archive", volume.shape, volume.dtype, grid, attributes)
    base = base_array(archive)
    blocks = list(block_grid(source.name, volume.shape, grid))
    worker = worker_identity()
    converted = 0
    recoded: list[str] = []
    with Ledger(ledger_path(archive)) as ledger:
        ledger.discover(blocks)
        now = {b.block_id: b for b in blocks}
        for record in ledger.blocks(source.name):
            grown = now.get(record.block_id)
            if (
                grown is not None
                and grown != record.block
                and ledger.supersede(grown, grew_reason(record.block, grown))
            ):
                recoded.append(record.block_id)
        already = len(ledger.blocks(states=("verified",)))
        if opened is not None and opened[1]:
            ledger.mark_pyramid(source.name, [whole_from(min(opened[1]))])
        try:
            image = opened[0] if opened is not None else None
            template = ConvertJob(source.as_json(), {}, str(archive), grid, settings, image)
            clock = [time.monotonic()]  # start, then as each block is finished
            for record, done in run_blocks(ledger, worker, template, pool, source.name):
                clock.append(time.monotonic())
                # One transaction: a kill leaves the block discovered (coded again) or verified.
                footprint = footprint_key(record.block.bounds)
                if done.level_one:
                    ledger.replace_pyramid(source.name, footprint, footprint_key(record.block.bounds, from_level=2))
                failpoint("convert.placed")
                steps = ("encoded", "verified") if record.state == "discovered" else ("verified",)
                ledger.advance_through(
                    record.block_id,
                    worker,
                    steps,
                    release=True,
                    codec=done.codec,
                    raw_sha256=done.raw_sha256,
                    raw_bytes=done.raw_bytes,
                    compressed_sha256=done.compressed_sha256,
                    compressed_bytes=done.compressed_bytes,
                    raw_stamp=done.stamp,
                )
                converted += 1
                if progress:
                    progress("convert", already + converted, len(blocks))
        finally:
            ledger.release_all(worker)
        pyramid_started = time.monotonic()
        unfinished = carry_up(ledger, lambda _volume: archive, _run_level)
        pyramid_seconds = time.monotonic() - pyramid_started
        records = {r.block_id: r for r in ledger.blocks(source.name)}
    if unfinished:
        raise VolumeError(f"{archive}: pyramid not brought up to date (run convert again): {unfinished}")
    missing = {}
    for block in blocks:
        held = records.get(block.block_id)
        if held is None:
            missing[block.block_id] = "not recorded"
        elif held.state != "verified" or held.block != block:
            missing[block.block_id] = f"{held.state}{': ' + held.reason if held.reason else ''}"
    chunk_bytes = sum(p.stat().st_size for p in (base / "c").rglob("*") if p.is_file())
    return ConvertReport(
        archive=archive,
        converted=converted,
        already_done=already,
        blocks=len(blocks),
        source_bytes=int(volume.dtype.itemsize) * volume.shape[0] * volume.shape[1] * volume.shape[2],
        archive_bytes=chunk_bytes,
        missing=missing,
        recoded=recoded,
        **_phases(clock, trains=settings.training_steps() > 0),
        pyramid_seconds=round(pyramid_seconds, 3),
    )


def _phases(clock: list[float], trains: bool) -> dict[str, float]:
    """``model_seconds`` and ``coding_seconds`` from the start and each block's finish (``clock``)."""
    if len(clock) < 2:
        return {"model_seconds": 0.0, "coding_seconds": 0.0}
    ready = clock[1] if trains else clock[0]
    return {"model_seconds": round(ready - clock[0], 3), "coding_seconds": round(clock[-1] - ready, 3)}


def _check_same_source(source: VolumeSource, volume: Volume, grid: tuple[int, int, int], archive: Path) -> VolumeSource:
    """The source to resume with (under the archive's volume name), or ``VolumeError`` if it is another.

    Decided from content: every block converted so far is compared with the source as it is now
    (its files' stamp, then its raw sha256). The archive is not touched before this passes.
    """
    try:
        existing = read_target(archive)
    except TargetError as exc:
        raise VolumeError(f"{archive}: cannot resume: {exc}") from exc
    if existing is not None and (
        existing.dtype != volume.dtype.name or not grids_agree(existing.grid, tuple(grid), volume.shape)
    ):
        raise VolumeError(
            f"{archive}: holds {existing.dtype} on a grid of {list(existing.grid)}; {source.location} is "
            f"{volume.dtype.name} on {list(grid)}: not the source it was converted from (use another archive)"
        )
    with Ledger(ledger_path(archive)) as ledger:
        records = ledger.blocks(states=("verified",))
        names = sorted({r.block.volume for r in records})
        if not records or any(r.raw_sha256 is None for r in records):
            _check_same_acquisition(source, archive)  # from before content checks: by acquisition id
            return source
        if len(names) != 1:
            raise VolumeError(f"{archive}: its ledger holds blocks of {len(names)} volumes; not resumed")
        differing: list[str] = []
        for record in records:
            why, stamp = _differs(volume, record)
            if why is not None:
                differing.append(f"{record.block_id} ({why})")
            elif stamp is not None and stamp != record.raw_stamp:
                ledger.restamp(record.block_id, stamp)
    if differing:
        shown = "; ".join(differing[:5]) + (f"; and {len(differing) - 5} more" if len(differing) > 5 else "")
        raise VolumeError(
            f"{archive}: {source.location} is not the source this archive was converted from: {len(differing)} of "
            f"{len(records)} converted blocks differ: {shown}. The archive is left as it is; convert this source "
            "into another archive"
        )
    return replace(source, name=names[0])


def _default_grid(volume: Volume, archive: Path) -> tuple[int, int, int]:
    """The block grid when none is given: the archive's own on a resume (the source may have grown
    since), else the default clipped to the source, which is complete (``choose_block_shape``)."""
    try:
        existing = read_target(archive)
    except TargetError:
        existing = None  # _check_same_* names the problem
    if existing is not None and len(existing.grid) == 3:
        return existing.grid[0], existing.grid[1], existing.grid[2]
    slices = volume.source.layout == "slices"
    return choose_block_shape(volume.chunk, whole_slices=slices, shape=volume.shape, clip_depth=True)


def _differs(volume: Volume, record: BlockRecord) -> tuple[str | None, str | None]:
    """Why a converted block's source data is not what was converted (None when it is), and its stamp now."""
    block = record.block
    if any(stop > extent for (_, stop), extent in zip(block.bounds, volume.shape, strict=True)):
        return f"the source is {list(volume.shape)}, the block reaches {[b[1] for b in block.bounds]}", None
    stamp = raw_stamp(volume, block)
    try:
        same = same_raw(volume, record, stamp)
    except VolumeError as exc:
        return f"unreadable: {exc}", None
    return (None if same else f"raw data of {slices_text(block.z0, block.z1)} differs"), stamp


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
