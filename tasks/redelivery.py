"""Asking the transfer backend to deliver a damaged container again.

A container in the data center's inbox whose size or sha256 differs from its (valid) provenance
record was damaged on the way or on disk. Before it is refused, the data center asks for it again:
the same file from the edge's outbox, through the same backend the edge ships with, promising the
record's sha256 (the local backend re-copies and checks it; Globus re-transfers with checksum
verification). A redelivery that cannot be made (the outbox copy was pruned or is damaged too) is
reported with the reason; the restore flow then refuses the container loudly.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tasks.names import UnsafeInputError
from tasks.transfer import OutboxFile, TransferBackend, TransferBatch, TransferError
from tasks.validation import validate_record

#: Times one damaged container is asked for again within one restore run before it is refused.
REDELIVERIES = 3

__all__ = ["REDELIVERIES", "redeliver"]


def _promised(container: Path) -> tuple[str, int, str]:
    """(sha256, size, block id) the container's record promises; UnsafeInputError if it cannot say."""
    record_path = container.with_name(container.stem + ".prov.json")
    try:
        record: Any = json.loads(record_path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise UnsafeInputError(f"{record_path}: unreadable provenance record ({exc})") from exc
    valid = validate_record(record, record_path, container)
    return valid.compressed_sha256, valid.compressed_bytes, valid.block.block_id


def redeliver(backend: TransferBackend, inbox: Path, outbox: Path, containers: list[Path]) -> dict[str, str]:
    """Deliver ``containers`` (paths in ``inbox``) again from ``outbox``; returns path -> why, for those that failed.

    ``backend`` ships from the edge's outbox into ``inbox`` (its destination): the files keep the
    relative paths they were shipped under. ``outbox`` is the outbox as this node sees it (the
    local backend copies from it; Globus reads its own ``source_root``).
    """
    failed: dict[str, str] = {}
    files: list[OutboxFile] = []
    for container in containers:
        try:
            sha256, size, block_id = _promised(container)
        except UnsafeInputError as exc:
            failed[str(container)] = str(exc)
            continue
        relative = str(container.relative_to(inbox))
        files.append(OutboxFile(outbox / relative, sha256, size, relative, block_id))
    for item in files:  # one batch per file: one that cannot be delivered does not hold up the others
        batch = TransferBatch(f"redeliver-{uuid.uuid4().hex[:8]}", item.relative_path.split("/")[0], (item,))
        try:
            backend.transfer(batch, backend.new_submission_id())
        except TransferError as exc:
            failed[str(inbox / item.relative_path)] = f"{type(exc).__name__}: {exc}"
    return failed
