"""The data center side: find received blocks, decode them, write them into the restored volume.

A block counts as received only when its container and its provenance record are both in the
inbox, the record passes validation (``tasks.validation``: schema, safe volume name, id matching
its bounds, bounds inside the volume, the names it arrived under) and the container's size and
sha256 equal the ones the record promises. A transfer still writing is *waiting*; a record that
fails validation is *refused*: reported with the reason, left in place, never restored. Restoring
decodes the block, writes it into ``<restored>/<volume>.zarr`` (zarr v3, sharded by block; the
path is resolved and must lie inside the restored root) and checks the sha256 of what reads back
against the raw sha256 in the record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorstore as ts
import zarr

from codec import decompress
from codec.errors import EmzipError
from tasks.archive import open_archive, place_block
from tasks.checksums import file_sha256
from tasks.destination import RestoreError, open_destination, write_block
from tasks.failpoints import failpoint
from tasks.grid import BlockRef
from tasks.names import UnsafeInputError, check_volume_name, inside
from tasks.provenance import write_record
from tasks.validation import ValidBlock, validate_record

#: Largest provenance record read (real ones are a few kB).
MAX_RECORD_BYTES = 1 << 20

__all__ = [
    "TARGETS",
    "InboxScan",
    "ReceivedBlock",
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


class _WaitingError(Exception):
    """Not usable yet: the record has not arrived, or the files are still being written."""


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


def find_received(inbox: Path, done: frozenset[str] = frozenset()) -> InboxScan:
    """Complete blocks in the inbox, files waiting, and files refused (with the reasons).

    Blocks whose id is in ``done`` (already restored) are passed over without hashing them again.
    """
    scan = InboxScan()
    if not inbox.is_dir():
        return scan
    for container in sorted(inbox.glob("*/*.emz")):
        try:
            item = load_received(inbox, container, done)
        except _WaitingError as exc:
            scan.waiting[str(container)] = str(exc)
            continue
        except UnsafeInputError as exc:
            scan.refused[str(container)] = str(exc)
            continue
        if item is not None:
            scan.received.append(item)
    return scan


def load_received(inbox: Path, container: Path, done: frozenset[str] = frozenset()) -> ReceivedBlock | None:
    """One received block, validated from its files (None if its id is in ``done``).

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
    if valid.block.block_id in done:
        return None
    if container.stat().st_size != valid.compressed_bytes or file_sha256(container) != valid.compressed_sha256:
        raise _WaitingError("size or sha256 differs from its record (still arriving or damaged)")
    return ReceivedBlock(valid, container, record_path, record)


def prepare_targets(items: list[ReceivedBlock], restored_root: Path, target_kind: str) -> None:
    """Create (or grow) every volume or archive these blocks go into, before workers write blocks.

    Parallel workers then only open them: creating and resizing stay in one place, never raced.
    """
    by_volume: dict[str, list[ReceivedBlock]] = {}
    for item in items:
        by_volume.setdefault(item.block.volume, []).append(item)
    for name, members in by_volume.items():
        first = members[0]
        z, y, x = (max(m.valid.volume_shape[axis] for m in members) for axis in range(3))
        extent = (z, y, x)
        target = inside(restored_root, f"{name}.zarr")
        attributes = _attributes(first)
        if target_kind == "archive":
            open_archive(target, extent, first.valid.dtype, first.valid.block_shape, attributes)
        else:
            open_destination(target, extent, first.valid.dtype, first.valid.block_shape, attributes)


TARGETS = ("volume", "archive")


def limit_io_threads(threads: int) -> None:
    """Run this process's restore I/O helpers on ``threads`` threads, not one per core of the node.

    TensorStore's data copies (chunk encoding and zstd compression of the written block) and
    zarr-python's codec work (the read-back) each default to a thread pool as large as the
    node. A Dask restore worker runs ``threads`` tasks at a time, one per core it was given: on
    a node with a worker per core those pools add up to cores x cores threads, and a worker's
    helpers preempt the others' decoding. Called by ``tasks.dask_preload`` with the worker's
    thread count. Measured with the shared Prefect TLS context (``tasks.prefect_tls``), restoring
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
        "emzip": {"source": volume.get("source"), "restored_from": str(item.container_path.parent)},
    }


def restore_block(
    item: ReceivedBlock, restored_root: Path, context: ts.Context | None = None, target_kind: str = "volume"
) -> dict[str, Any]:
    """Restore one block; returns the record's ``restore`` section (also written to it).

    ``target_kind`` ``volume``: decode and write into a zstd zarr v3 volume (for TensorStore,
    neuroglancer and tools that cannot load a Python codec). ``archive``: place the container
    itself as the block's chunk of an emzip-coded zarr v3 array (``tasks.archive``), no decoding.
    Both are read back and checked against the record's raw sha256. The volume or archive is
    created (and grown) beforehand by ``prepare_targets``, once per run, not by each block.
    """
    if target_kind not in TARGETS:
        raise ValueError(f"restore target must be one of {TARGETS}, got {target_kind!r}")
    started = time.monotonic()
    valid, record = item.valid, item.record
    target = inside(restored_root, f"{valid.block.volume}.zarr")
    if target_kind == "archive":
        shipped = item.container_path.read_bytes()
        place_block(target, valid.block, valid.block_shape, shipped, valid.compressed_sha256, valid.raw_sha256)
    else:
        try:
            data = decompress(item.container_path.read_bytes())
        except EmzipError as exc:
            raise RestoreError(f"{valid.block.block_id}: {item.container_path} does not decode: {exc}") from exc
        store = open_destination(
            target, valid.volume_shape, valid.dtype, valid.block_shape, _attributes(item), context or _io_context
        )
        write_block(store, valid.block, data, valid.raw_sha256)
    failpoint("restore.written")
    section = {
        "target": target_kind,
        "volume_path": str(target),
        "verified_sha256": valid.raw_sha256,
        "seconds": round(time.monotonic() - started, 3),
    }
    write_record(item.record_path, {**record, "restore": section})
    return section
