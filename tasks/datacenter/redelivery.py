"""Asking the transfer backend to deliver a damaged container again.

A container in the data center's inbox whose size or sha256 differs from its (valid) provenance
record was damaged on the way or on disk. Before it is refused, the data center asks for it again:
the same file from the edge's outbox, through the same backend the edge ships with, promising the
record's sha256 (the local backend re-copies and checks it; Globus re-transfers with checksum
verification). A redelivery that cannot be made (the outbox copy was pruned or is damaged too) is
reported with the reason; the restore flow then refuses the container loudly.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from tasks.store.validation import ValidBlock
from tasks.transfer import OutboxFile, TransferBackend, TransferBatch, TransferError

#: Times one damaged container is asked for again within one restore run before it is refused.
REDELIVERIES = 3

__all__ = ["REDELIVERIES", "redeliver"]


def redeliver(backend: TransferBackend, inbox: Path, outbox: Path, promised: dict[str, ValidBlock]) -> dict[str, str]:
    """Deliver containers again from ``outbox``; returns path -> why, for those that could not be.

    ``promised`` maps each container's path in ``inbox`` to its validated record (the sha256 and
    size the delivery must have). ``backend`` ships from the edge's outbox into ``inbox`` (its
    destination): the files keep the relative paths they were shipped under. ``outbox`` is the
    outbox as this node sees it (the local backend copies from it; Globus reads its own
    ``source_root``). One batch per file: one that cannot be delivered does not hold up the others.
    """
    failed: dict[str, str] = {}
    for path, valid in promised.items():
        relative = str(Path(path).relative_to(inbox))
        item = OutboxFile(
            outbox / relative, valid.compressed_sha256, valid.compressed_bytes, relative, valid.block.block_id
        )
        batch = TransferBatch(f"redeliver-{uuid.uuid4().hex[:8]}", valid.block.volume, (item,))
        try:
            backend.transfer(batch, backend.new_submission_id())
        except TransferError as exc:
            failed[path] = f"{type(exc).__name__}: {exc}"
    return failed
