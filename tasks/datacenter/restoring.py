"""The data center side: find received blocks, decode them, write them into the restored volume.

A block counts as received only when its container and its provenance record are both in the
inbox, the record passes validation (``tasks.store.validation``: schema, safe volume name, id matching
its bounds, bounds inside the volume, the names it arrived under) and the container's size and
sha256 equal the ones the record promises. A transfer still writing is *waiting*; a record that
fails validation is *refused*: reported with the reason, left in place, never restored. Restoring
decodes the block, writes it into the full-resolution array ``0`` of ``<restored>/<volume>.zarr``
(an OME-Zarr image, ``tasks.datacenter.omezarr``; zarr v3, sharded by block; the path is resolved and must
lie inside the restored root) and checks the sha256 of what reads back against the raw sha256 in
the record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorstore as ts
import zarr

from codec import decompress
from codec.container import unpack
from codec.errors import EmzipError
from tasks.datacenter.archive import place_block
from tasks.datacenter.destination import RestoreError, open_destination, write_block
from tasks.datacenter.omezarr import base_array, open_image, read_image
from tasks.datacenter.pyramid import first_level_from_block
from tasks.datacenter.targets import TargetError, TargetInfo, disagreement, read_target
from tasks.source.grid import BlockRef
from tasks.source.volumes import portable_source
from tasks.store.checksums import file_sha256
from tasks.store.diskspace import out_of_space
from tasks.store.failpoints import failpoint
from tasks.store.names import UnsafeInputError, check_volume_name, inside
from tasks.store.provenance import write_record
from tasks.store.validation import ValidBlock, validate_record

#: Largest provenance record read (real ones are a few kB).
MAX_RECORD_BYTES = 1 << 20
#: A received pair whose files have not changed for this long, yet do not match each other
#: (size or sha256), is damaged, not arriving: it is refused (reported, left in place).
DAMAGED_AFTER_SECONDS = 600.0

__all__ = [
    "TARGETS",
    "InboxScan",
    "ReceivedBlock",
    "Restored",
    "check_container_head",
    "find_received",
    "limit_io_threads",
    "load_received",
    "prepare_targets",
    "restore_block",
]

#: The TensorStore context of this process's restores when the caller gives none: None is
#: TensorStore's default (a data-copy thread per core of the node); see ``limit_io_threads``.
_io_context: ts.Context | None = None


@dataclass(frozen=True)
class ReceivedBlock:
    """A complete, validated, checksum-matching block in the inbox."""

    valid: ValidBlock
    container_path: Path
    record_path: Path
    record: dict[str, Any]

    @property
    def block(self) -> BlockRef:
        """The block the record describes (validated against its bounds and file names)."""
        return self.valid.block


@dataclass
class InboxScan:
    """One look at the inbox: blocks ready to restore, files still arriving, files refused."""

    received: list[ReceivedBlock] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    """path -> why it is not usable yet (it may still be arriving)."""
    refused: dict[str, str] = field(default_factory=dict)
    """path -> why it is refused (malformed or unsafe; left in place, never restored)."""
    mismatched: dict[str, ValidBlock] = field(default_factory=dict)
    """path -> the valid record of a container that disagrees with it (the path is also in
    ``waiting`` or ``refused``, with how): what a redelivery (``tasks.datacenter.redelivery``) can repair."""
    superseded: list[str] = field(default_factory=list)
    """containers of block versions older than one received or restored (never restored)."""


class _WaitingError(Exception):
    """Not usable yet: the record has not arrived, or the files are still being written."""


class _DamagedOrArrivingError(_WaitingError):
    """The container disagrees with its record: still arriving, or (once quiet) damaged."""

    def __init__(self, message: str, valid: ValidBlock) -> None:
        super().__init__(message)
        self.valid = valid


def _quiet_for(container: Path, seconds: float) -> bool:
    """Whether the container and its record have both been left alone for ``seconds``."""
    record = container.with_name(container.stem + ".prov.json")
    try:
        latest = max(container.stat().st_mtime, record.stat().st_mtime)
    except OSError:
        return False
    return time.time() - latest >= seconds


def _read_record(path: Path) -> Any:
    if path.is_symlink() or not path.is_file():
        raise UnsafeInputError(f"{path}: provenance record is not a regular file")
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise UnsafeInputError(f"{path}: provenance record is larger than {MAX_RECORD_BYTES} bytes")
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise UnsafeInputError(f"{path}: unreadable provenance record ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # most likely still arriving: transfers may write in place
        raise _WaitingError(f"provenance record is not complete JSON yet ({exc})") from exc
    except (ValueError, RecursionError) as exc:
        raise UnsafeInputError(f"{path}: unreadable provenance record ({type(exc).__name__}: {exc})") from exc


#: What the data center restored of a block: (version, raw sha256).
Restored = tuple[int, str | None]


def find_received(
    inbox: Path, done: Mapping[str, Restored] | None = None, damaged_after: float = DAMAGED_AFTER_SECONDS
) -> InboxScan:
    """Complete blocks in the inbox, files waiting, and files refused (with the reasons).

    Blocks whose id and version are in ``done`` (already restored: id -> (version, raw sha256))
    are passed over without hashing them again, unless their record promises other data (refused:
    another acquisition under a taken volume id must never pass for the restored one). Of several
    versions of one block only the newest is restored; older ones are listed as ``superseded``.
    A container that disagrees with its record (size or sha256) waits while either file changed
    within ``damaged_after`` seconds (a transfer may still be writing it) and is refused as
    damaged after that.
    """
    scan = InboxScan()
    if not inbox.is_dir():
        return scan
    newest: dict[str, ReceivedBlock] = {}
    for container in sorted(inbox.glob("*/*.emz")):
        try:
            item = load_received(inbox, container, done)
        except _DamagedOrArrivingError as exc:
            scan.mismatched[str(container)] = exc.valid
            if _quiet_for(container, damaged_after):
                scan.refused[str(container)] = f"{container}: damaged: {exc}"
            else:
                scan.waiting[str(container)] = str(exc)
            continue
        except _WaitingError as exc:
            scan.waiting[str(container)] = str(exc)
            continue
        except UnsafeInputError as exc:
            scan.refused[str(container)] = str(exc)
            continue
        if item is None:
            continue
        known = newest.get(item.block.block_id)
        if known is not None and known.valid.version >= item.valid.version:
            scan.superseded.append(str(item.container_path))
            continue
        if known is not None:
            scan.superseded.append(str(known.container_path))
        newest[item.block.block_id] = item
    scan.received = sorted(newest.values(), key=lambda item: item.block.block_id)
    return scan


def load_received(inbox: Path, container: Path, done: Mapping[str, Restored] | None = None) -> ReceivedBlock | None:
    """One received block, validated from its files (None if ``done`` holds it, or a newer version of it).

    Raises ``UnsafeInputError`` (refuse it) or an internal waiting error (look again later). A
    restore worker calls this itself with the paths it was given, so nothing but file names
    crosses from the flow to a (possibly remote) worker.
    """
    check_volume_name(container.parent.name, str(container.parent))
    inside(inbox, container.parent.name, container.name)
    record_path = container.with_name(container.stem + ".prov.json")
    if not record_path.exists():
        raise _WaitingError("provenance record not arrived yet")
    record = _read_record(record_path)
    valid = validate_record(record, record_path, container)
    if done is not None and valid.block.block_id in done:
        version, restored = done[valid.block.block_id]
        if valid.version < version:
            return None  # an older version than the one restored: superseded
        if valid.version == version:
            if restored is not None and restored != valid.raw_sha256:
                raise UnsafeInputError(
                    f"{record_path}: {valid.block.block_id} version {version} is already restored from other data "
                    f"(raw sha256 {restored[:12]}, this record {valid.raw_sha256[:12]}): another acquisition under "
                    "a taken volume id?"
                )
            return None
    size = container.stat().st_size
    if size != valid.compressed_bytes:
        raise _DamagedOrArrivingError(f"{size} bytes, its record says {valid.compressed_bytes}", valid)
    if file_sha256(container) != valid.compressed_sha256:
        raise _DamagedOrArrivingError("sha256 differs from its record", valid)
    return ReceivedBlock(valid, container, record_path, record)


def prepare_targets(
    items: list[ReceivedBlock], restored_root: Path, target_kind: str, new_levels: dict[str, list[int]] | None = None
) -> dict[str, str]:
    """Create (or grow) every volume or archive these blocks go into, before workers write blocks.

    Each target is an OME-Zarr image (``tasks.datacenter.omezarr``): the volume or archive as its level 0,
    and its pyramid's levels, created or grown with it; ``new_levels`` (if given) gets, per volume,
    the levels this call added (computed whole by the next pyramid pass).

    Returns the blocks refused (block id -> why): a block whose record disagrees with its
    target (dtype, block grid, acquisition; ``tasks.datacenter.targets``) is refused alone and the target is
    not touched for it; the other blocks and volumes go on. A target not yet created takes the
    dtype, grid and acquisition most of its blocks agree on. Parallel workers then only open the
    targets: creating and resizing stay in one place, never raced.
    """
    refused: dict[str, str] = {}
    by_volume: dict[str, list[ReceivedBlock]] = {}
    for item in items:
        by_volume.setdefault(item.block.volume, []).append(item)
    for name, members in by_volume.items():
        target = inside(restored_root, f"{name}.zarr")
        try:
            existing = read_target(target)
        except TargetError as exc:
            refused.update({m.block.block_id: str(exc) for m in members})
            continue
        reference = existing or _majority(members)
        accepted = []
        for member in members:
            why = disagreement(reference, member.valid)
            if why is None:
                accepted.append(member)
            else:
                refused[member.block.block_id] = f"{target}: {why}"
        if not accepted:
            continue
        first = accepted[0]
        extent = tuple(max(m.valid.volume_shape[axis] for m in accepted) for axis in range(3))
        attributes = _attributes(first)
        try:
            opened = open_image(target, target_kind, extent, first.valid.dtype, first.valid.block_shape, attributes)  # type: ignore[arg-type]
            if opened is not None and opened[1] and new_levels is not None:
                new_levels[name] = opened[1]
        except (RestoreError, OSError) as exc:
            if out_of_space(exc):  # not the blocks' fault: the run stops, they stay shipped
                raise
            refused.update({m.block.block_id: str(exc) for m in accepted})
    return refused


def _majority(members: list[ReceivedBlock]) -> TargetInfo:
    """What a new target holds: the dtype, grid and acquisition most of its first blocks agree on."""
    votes: dict[tuple[str, tuple[int, ...], str | None], int] = {}
    for member in members:
        key = (member.valid.dtype.name, tuple(member.valid.block_shape), member.valid.acquisition)
        votes[key] = votes.get(key, 0) + 1
    (dtype, grid, acquisition), _ = max(votes.items(), key=lambda kv: (kv[1], str(kv[0])))
    return TargetInfo(dtype, grid, (), acquisition)


def check_container_head(valid: ValidBlock, data: bytes, where: Path) -> None:
    """Refuse a container whose HEAD disagrees with its record, before anything is decoded.

    A decoder allocates what HEAD claims: a record for an 8x32x32 block must not let its
    container make the data center decode a gigabyte.
    """
    try:
        parsed = unpack(data)
    except EmzipError as exc:
        raise RestoreError(f"{valid.block.block_id}: {where} is not a readable container: {exc}") from exc
    head = parsed.header
    problems = []
    if head.dtype != valid.dtype.str:
        problems.append(f"dtype {head.dtype} (record {valid.dtype.str})")
    if tuple(head.shape) != valid.block.shape:
        problems.append(f"shape {list(head.shape)} (record {list(valid.block.shape)})")
    if head.sha256.hex() != valid.raw_sha256:
        problems.append("raw sha256 differs from the record's")
    original = parsed.config.get("original_dtype", head.dtype)
    if original != head.dtype:
        problems.append(f"original_dtype {original!r} differs from HEAD's {head.dtype}")
    if problems:
        raise RestoreError(f"{valid.block.block_id}: {where} disagrees with its record: {'; '.join(problems)}")


TARGETS = ("volume", "archive")


def limit_io_threads(threads: int) -> None:
    """Run this process's restore I/O helpers on ``threads`` threads, not one per core of the node.

    TensorStore's data copies (chunk encoding and zstd compression of the written block) and
    zarr-python's codec work (the read-back) each default to a thread pool as large as the
    node. A Dask restore worker runs ``threads`` tasks at a time, one per core it was given: on
    a node with a worker per core those pools add up to cores x cores threads, and a worker's
    helpers preempt the others' decoding. Called by ``flows.dask_preload`` with the worker's
    thread count. Measured with the shared Prefect TLS context (``flows.prefect_tls``), restoring
    32 FlyEM blocks alternately with the earlier preload in one run, five times each: 2 workers
    3.78-3.99 s instead of 4.02-4.25 s, 1 worker 6.81-7.14 s instead of 7.02-7.37 s
    (bench/RESULTS.md, "Restore on Dask").
    """
    global _io_context
    if threads < 1:
        raise ValueError(f"restore I/O threads must be at least 1, got {threads}")
    _io_context = ts.Context({"data_copy_concurrency": {"limit": threads}})
    zarr.config.set({"threading.max_workers": threads})


def _attributes(item: ReceivedBlock) -> dict[str, Any]:
    """The restored volume's attributes: voxel size, units, where it came from."""
    volume = item.record["volume"]
    return {
        "voxel_size": volume.get("voxel_size"),
        "units": volume.get("units"),
        "emzip": {
            "source": portable_source(volume.get("source")),
            "acquisition": item.valid.acquisition,
            "restored_from": item.container_path.parent.name,  # the inbox folder, not the site's path
        },
    }


def restore_block(
    item: ReceivedBlock, restored_root: Path, context: ts.Context | None = None, target_kind: str = "volume"
) -> dict[str, Any]:
    """Restore one block; returns the record's ``restore`` section (also written to it).

    ``target_kind`` ``volume``: decode and write into a zstd zarr v3 volume (for TensorStore,
    neuroglancer and tools that cannot load a Python codec). ``archive``: place the container
    itself as the block's chunk of an emzip-coded zarr v3 array (``tasks.datacenter.archive``), no decoding.
    Both are read back and checked against the record's raw sha256. The volume or archive is
    created (and grown) beforehand by ``prepare_targets``, once per run, not by each block.
    """
    if target_kind not in TARGETS:
        raise ValueError(f"restore target must be one of {TARGETS}, got {target_kind!r}")
    started = time.monotonic()
    valid, record = item.valid, item.record
    target = inside(restored_root, f"{valid.block.volume}.zarr")
    try:
        existing = read_target(target)
    except TargetError as exc:
        raise RestoreError(f"{valid.block.block_id}: {exc}") from exc
    if existing is None:
        raise RestoreError(f"{valid.block.block_id}: {target} was not prepared (prepare_targets)")
    why = disagreement(existing, valid)
    if why is not None:
        raise RestoreError(f"{valid.block.block_id}: {target}: {why}")
    shipped = item.container_path.read_bytes()
    check_container_head(valid, shipped, item.container_path)
    base = base_array(target)
    if target_kind == "archive":
        data = place_block(base, valid.block, valid.block_shape, shipped, valid.compressed_sha256, valid.raw_sha256)
    else:
        try:
            data = decompress(shipped)
        except EmzipError as exc:
            raise RestoreError(f"{valid.block.block_id}: {item.container_path} does not decode: {exc}") from exc
        store = open_destination(
            base, valid.volume_shape, valid.dtype, valid.block_shape, _attributes(item), context or _io_context
        )
        write_block(store, valid.block, data, valid.raw_sha256)
    image = read_image(target)  # None: restored before OME-Zarr, no pyramid
    level_one = image is not None and first_level_from_block(
        target, image.levels, image.chunk, valid.block.bounds, data
    )
    failpoint("restore.written")
    section = {
        "target": target_kind,
        "volume_path": str(target),
        "verified_sha256": valid.raw_sha256,
        "pyramid_level_one": level_one,
        "seconds": round(time.monotonic() - started, 3),
    }
    write_record(item.record_path, {**record, "restore": section})
    return section
