"""Blocks whose source moved on since they were coded: grown bounds and changed raw data.

A block is (volume, grid position, version). Two things make a coded block stale, and both are
decided from the source as it is now, never from a path, an inode or a count:

- **Grown**: it was coded while the acquisition was shorter than the block's extent (a partial
  tail block), and the volume now reaches further. Its grid cell's bounds differ from the ones
  recorded.
- **Changed**: a raw file it was read from was rewritten with other pixels. Each coded block
  keeps a *stamp* of its raw files (name, size, modification time in ns) taken before it was
  read; a file whose stamp moved is read again and the block's sha256 compared with the one
  coded. Same bytes (a copy, a ``touch``): the stamp is renewed. Other bytes: changed.

Stale blocks are superseded (``Ledger.supersede``): coded again as the next version, or, where the
operator asks for it, refused with an error naming the slices. Blocks whose raw files are gone
(pruned after shipping) have nothing left to compare and keep their version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tasks.source.grid import BlockRef
from tasks.source.volumes import Volume, VolumeError
from tasks.store.checksums import array_sha256
from tasks.store.ledger import BlockRecord

#: States whose blocks were read and coded: their raw sha256 is the one to compare with.
CODED_STATES = ("encoded", "verified", "shipped", "restored")

__all__ = [
    "CODED_STATES",
    "Revision",
    "SourceChangedError",
    "find_revisions",
    "grew_reason",
    "raw_stamp",
    "same_raw",
    "slices_text",
]


class SourceChangedError(VolumeError):
    """Raw data of coded blocks changed and the run was told to refuse rather than code them again."""


@dataclass(frozen=True)
class Revision:
    """A coded block that must be coded again: the block as it is now, and why (names the slices)."""

    block: BlockRef
    old: BlockRecord
    reason: str
    grown: bool


def slices_text(z0: int, z1: int) -> str:
    """``slices 16-31`` (inclusive, as an operator counts them) for the half-open range [z0, z1)."""
    return f"slice {z0}" if z1 - z0 == 1 else f"slices {z0}-{z1 - 1}"


def raw_stamp(volume: Volume, block: BlockRef) -> str | None:
    """The block's raw files as ``[[name, size, mtime_ns], ...]`` (JSON), or None when not inspectable.

    Names are relative to the volume's folder, so a folder moved or copied elsewhere compares by
    content (a copy's new times only cost a checksum). A missing file is recorded as size -1.
    """
    keys = volume.storage_keys(block.bounds)
    if keys is None:
        return None
    root = Path(volume.source.location)
    entries = []
    for key in keys:
        try:
            info = key.stat()
            size, mtime = info.st_size, info.st_mtime_ns
        except OSError:
            size, mtime = -1, 0
        try:
            name = str(key.relative_to(root))
        except ValueError:
            name = key.name
        entries.append([name, size, mtime])
    return json.dumps(entries, separators=(",", ":"))


def grew_reason(old: BlockRef, new: BlockRef) -> str:
    """Why a block is coded again after the volume grew: its old and new z range, and the slices added."""
    return f"bounds grew from z [{old.z0}, {old.z1}) to [{new.z0}, {new.z1}): {slices_text(old.z1, new.z1)} added"


def same_raw(volume: Volume, record: BlockRecord, stamp: str | None) -> bool:
    """Whether the block's raw data now is what was coded; ``stamp`` is its files' stamp now (``raw_stamp``).

    The stamp first: unchanged means the same data, without a read. Otherwise the block is read
    over the bounds it was coded with and its sha256 compared. ``VolumeError`` when it cannot be read.
    """
    if stamp is not None and stamp == record.raw_stamp:
        return True
    return array_sha256(volume.read(record.block.bounds)) == record.raw_sha256


def _changed_files(old: str | None, new: str) -> list[str]:
    """Names whose stamp differs (all of them when there is no old stamp)."""
    if old is None:
        return [entry[0] for entry in json.loads(new)]
    before = {entry[0]: entry[1:] for entry in json.loads(old)}
    return [entry[0] for entry in json.loads(new) if before.get(entry[0]) != entry[1:]]


def _all_missing(stamp: str) -> bool:
    return all(entry[1] < 0 for entry in json.loads(stamp))


def find_revisions(
    volume: Volume, records: Iterable[BlockRecord], grid_now: dict[str, BlockRef]
) -> tuple[list[Revision], dict[str, str]]:
    """Coded blocks that are stale, and stamps to renew (block id -> stamp) for blocks found unchanged.

    ``grid_now`` maps the ids of the blocks ready now to their bounds now; blocks not ready (a file
    still settling) are looked at once they are. A block whose bounds grew is stale whatever its
    data; the others are checked for changed raw files (stamp first, then the checksum over the
    bounds they were coded with). Blocks in other states (discovered, failed: coded from scratch
    when claimed) are left alone.
    """
    revisions: list[Revision] = []
    renew: dict[str, str] = {}
    for record in records:
        now = grid_now.get(record.block_id)
        old = record.block
        if now is None:
            continue  # not ready now (a file still settling): looked at again once it is
        if now != old:
            revisions.append(Revision(now, record, grew_reason(old, now), True))
            continue
        if record.state not in CODED_STATES or record.raw_sha256 is None:
            continue
        stamp = raw_stamp(volume, old)
        if stamp is not None and _all_missing(stamp):
            continue  # pruned after shipping: nothing left to compare
        try:
            same = same_raw(volume, record, stamp)
        except VolumeError:
            continue  # unreadable now (part pruned, still being written): readiness decides, not us
        if same:
            if stamp is not None and stamp != record.raw_stamp:
                renew[record.block_id] = stamp
            continue
        files = _changed_files(record.raw_stamp, stamp) if stamp is not None else []
        named = f" (files {', '.join(files[:5])}{' ...' if len(files) > 5 else ''})" if files else ""
        reason = f"raw data of {slices_text(old.z0, old.z1)} changed since version {record.version} was coded{named}"
        revisions.append(Revision(now, record, reason, False))
    return revisions, renew
