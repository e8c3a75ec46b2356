"""Safe pruning of outbox copies, only after the destination confirmed their checksums.

Off by default in the flows. Nothing is deleted on existence alone: a file is removed only when
the transfer report says its sha256 was verified at the destination *and* the local file still has
that sha256 (so a re-written outbox file is never lost). ``dry_run`` reports without deleting.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.store.checksums import file_sha256
from tasks.store.failpoints import failpoint
from tasks.transfer._model import TransferBatch, TransferReport


@dataclass(frozen=True)
class PruneAction:
    """What pruning did (or would do) with one outbox file, and why."""

    path: str
    block_id: str | None
    deleted: bool
    reason: str


def prune_outbox(batch: TransferBatch, report: TransferReport, dry_run: bool = True) -> list[PruneAction]:
    """Delete the batch's outbox files whose destination checksum was confirmed."""
    confirmed = {r.relative_path: r.sha256 for r in report.files if r.verified}
    actions: list[PruneAction] = []
    for item in batch.files:
        if report.status != "SUCCEEDED" or confirmed.get(item.relative_path) != item.sha256:
            actions.append(PruneAction(str(item.path), item.block_id, False, "destination checksum not confirmed"))
            continue
        if not item.path.is_file():
            actions.append(PruneAction(str(item.path), item.block_id, False, "already gone"))
            continue
        if file_sha256(item.path) != item.sha256:
            actions.append(PruneAction(str(item.path), item.block_id, False, "local file changed since shipping"))
            continue
        if dry_run:
            actions.append(PruneAction(str(item.path), item.block_id, False, "dry run: would delete"))
            continue
        item.path.unlink()
        failpoint("prune.outbox")
        actions.append(PruneAction(str(item.path), item.block_id, True, "destination sha256 confirmed"))
    return actions
