"""Shipping at the edge: verified blocks in batches, each batch's transfer in a task beside the coding.

A batch's submission id is stored in the ledger before its transfer starts, so a run killed
mid-transfer resubmits under the same id (Globus then never makes a second copy). A batch whose
transfer fails is released for the next run (transient) or failed (permanent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.events import emit_event

from flows.events import TRANSFER_COMPLETED, VOLUME_RESOURCE_PREFIX
from flows.steps import ship_batch
from tasks.edge.shipping import assign_batches, batch_files, outbox_file, record_transfer
from tasks.store.failpoints import failpoint
from tasks.store.ledger import BlockRecord, Ledger, LedgerError
from tasks.transfer import PermanentTransferError, TransferBackend, TransferBatch, TransferError
from tasks.transfer import prune_outbox as prune_outbox_files

__all__ = ["Shipment", "finish_shipping", "start_shipping"]


@dataclass
class Shipment:
    """One batch on its way: its transfer runs in a task (a future) while the flow goes on."""

    batch_id: str
    ids: list[str]
    members: list[BlockRecord]
    batch: TransferBatch | None
    future: Any | None
    error: TransferError | None = None
    """Set when the batch failed before its transfer could start (a changed outbox file)."""


def start_shipping(
    ledger: Ledger,
    worker: str,
    backend: TransferBackend,
    outbox: Path,
    records: list[BlockRecord],
    batch_size: int,
    retries: int,
) -> list[Shipment]:
    """Batch claimed verified blocks and start each batch's transfer (``ship_batch.submit``).

    A batch's submission id is stored in the ledger before its transfer starts, so a run killed
    mid-transfer resubmits under the same id (Globus then never makes a second copy).
    """
    shipments: list[Shipment] = []
    for batch_id, ids in assign_batches(ledger, worker, records, batch_size).items():
        members = [ledger.get(i) for i in ids]
        try:
            try:
                submission_id = ledger.batch(batch_id)["submission_id"]
            except LedgerError:  # a new batch: get its submission id once and store it before submitting
                submission_id = backend.new_submission_id()
                ledger.open_batch(batch_id, backend.destination, submission_id)
            batch = batch_files(outbox, batch_id, members)
        except TransferError as exc:
            shipments.append(Shipment(batch_id, ids, members, None, None, exc))
            continue
        future = ship_batch.with_options(retries=retries).submit(backend, batch, submission_id)
        shipments.append(Shipment(batch_id, ids, members, batch, future))
    return shipments


def finish_shipping(
    ledger: Ledger,
    worker: str,
    backend: TransferBackend,
    outbox: Path,
    shipment: Shipment,
    prune: str = "off",
) -> list[str]:
    """Wait for one batch's transfer and record it: shipped, or released/failed; returns the ids shipped."""
    logger = get_run_logger()
    batch_id, ids = shipment.batch_id, shipment.ids
    try:
        if shipment.future is None or shipment.batch is None:  # it failed before its transfer started
            raise shipment.error or PermanentTransferError(f"{batch_id}: its transfer never started")
        report = shipment.future.result()
        failpoint("copy.done")
    except TransferError as exc:
        ledger.update_batch(batch_id, "failed", detail={"error": str(exc)})
        permanent = isinstance(exc, PermanentTransferError)
        for block_id in ids:
            if permanent:  # a retry must start a new batch: this one's submission id is spent
                ledger.annotate(block_id, worker, batch_id=None)
                ledger.fail(block_id, worker, f"transfer failed: {exc}")
            else:
                ledger.release(block_id, worker)  # stays verified; the next run ships it
        logger.error("%s: transfer failed (%s): %s", ", ".join(ids), "permanent" if permanent else "will retry", exc)
        return []
    ledger.update_batch(batch_id, "succeeded", report.task_id, report.as_json())
    prov_files = [record_transfer(outbox, member, report) for member in shipment.members]
    _ship_updated_records(backend, outbox, batch_id, prov_files, ids)
    if prune != "off":
        for action in prune_outbox_files(shipment.batch, report, dry_run=prune != "delete"):
            if action.block_id:
                ledger.note(action.block_id, f"outbox {Path(action.path).name}: {action.reason}", worker)
    for block_id in ids:
        ledger.advance(block_id, worker, "shipped", release=True, timings={"transfer": round(report.seconds, 3)})
    emit_event(
        TRANSFER_COMPLETED,
        resource={"prefect.resource.id": f"{VOLUME_RESOURCE_PREFIX}{shipment.members[0].block.volume}"},
        payload={"batch_id": batch_id, "blocks": ids, "destination": backend.destination, "task_id": report.task_id},
    )
    return list(ids)


def _ship_updated_records(
    backend: TransferBackend, outbox: Path, batch_id: str, paths: list[Path], ids: list[str]
) -> None:
    """Send the provenance records again now that they carry the transfer's outcome."""
    files = tuple(outbox_file(outbox, p, block_id) for p, block_id in zip(paths, ids, strict=True))
    try:
        backend.transfer(
            TransferBatch(f"{batch_id}-provenance", ids[0].split("/")[0], files), backend.new_submission_id()
        )
    except TransferError as exc:
        get_run_logger().warning("%s: updated provenance records not delivered: %s", ", ".join(ids), exc)
