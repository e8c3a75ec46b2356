"""The data center side: find received blocks, decode them, write them into the restored volume.

A block counts as received only when its container and its provenance record are both in the
inbox and the container's sha256 equals the one the record promises (a transfer still writing,
or a damaged file, is not received). Restoring decodes it, writes it into
``<restored>/<volume>.zarr`` (zarr v3, sharded by block) and checks the sha256 of what reads back
against the raw sha256 in the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from codec import decompress
from codec.errors import EmzipError
from tasks.checksums import file_sha256
from tasks.destination import RestoreError, open_destination, write_block
from tasks.grid import BlockRef
from tasks.provenance import load_record, write_record

__all__ = ["ReceivedBlock", "find_received", "restore_block"]


@dataclass(frozen=True)
class ReceivedBlock:
    """A complete, checksum-matching block in the inbox."""

    block: BlockRef
    container_path: Path
    record_path: Path
    record: dict[str, Any]


def find_received(inbox: Path, done: frozenset[str] = frozenset()) -> tuple[list[ReceivedBlock], dict[str, str]]:
    """Complete blocks in the inbox, and (path -> why) for files that are not (yet) usable.

    Blocks whose id is in ``done`` (already restored) are passed over without hashing them again.
    """
    received: list[ReceivedBlock] = []
    skipped: dict[str, str] = {}
    if not inbox.is_dir():
        return received, skipped
    for container in sorted(inbox.glob("*/*.emz")):
        record_path = container.with_name(container.stem + ".prov.json")
        if not record_path.is_file():
            skipped[str(container)] = "provenance record not arrived yet"
            continue
        try:
            record = load_record(record_path)
        except ValueError as exc:
            skipped[str(container)] = str(exc)
            continue
        if record["block"]["id"] in done:
            continue
        if file_sha256(container) != record["encoding"]["compressed_sha256"]:
            skipped[str(container)] = "container sha256 differs from its record (still arriving or damaged)"
            continue
        received.append(ReceivedBlock(BlockRef.from_json(record["block"]), container, record_path, record))
    return received, skipped


def restore_block(item: ReceivedBlock, restored_root: Path, context: ts.Context | None = None) -> dict[str, Any]:
    """Decode and write one block; returns the record's ``restore`` section (also written to it)."""
    started = time.monotonic()
    record = item.record
    try:
        data = decompress(item.container_path.read_bytes())
    except EmzipError as exc:
        raise RestoreError(f"{item.block.block_id}: {item.container_path} does not decode: {exc}") from exc
    volume = record["volume"]
    target = restored_root / f"{item.block.volume}.zarr"
    attributes = {
        "voxel_size": volume.get("voxel_size"),
        "units": volume.get("units"),
        "emzip": {"source": volume.get("source"), "restored_from": str(item.container_path.parent)},
    }
    shape = tuple(
        max(a, b) for a, b in zip(volume["shape"], (item.block.z1, item.block.y1, item.block.x1), strict=True)
    )
    store = open_destination(
        target,
        (shape[0], shape[1], shape[2]),
        np.dtype(record["block"]["dtype"]),
        tuple(volume["block_shape"]),
        attributes,
        context,
    )
    write_block(store, item.block, data, record["encoding"]["raw_sha256"])
    section = {
        "volume_path": str(target),
        "verified_sha256": record["encoding"]["raw_sha256"],
        "seconds": round(time.monotonic() - started, 3),
    }
    write_record(item.record_path, {**record, "restore": section})
    return section
