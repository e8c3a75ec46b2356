"""Batching verified blocks for transfer, with submission ids persisted before submitting.

A batch's id is written on its blocks in the ledger and its submission id in the ``batches``
table *before* anything is submitted; after a crash the same blocks are shipped again as the same
batch under the same submission id, so Globus answers with the existing task and the local backend
finds verified copies already in place: never a second copy.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.edge.encoding import outbox_paths
from tasks.store.checksums import file_sha256
from tasks.store.ledger import SHIPPED_STATES, BlockRecord, Ledger
from tasks.store.provenance import load_record, write_record
from tasks.transfer import (
    GlobusSettings,
    GlobusTransfer,
    LocalTransfer,
    OutboxFile,
    PermanentTransferError,
    TransferBackend,
    TransferBatch,
    TransferReport,
    transfer_client_from_credentials,
)

CLIENT_ID_ENV = "EMZIP_GLOBUS_CLIENT_ID"
CLIENT_SECRET_ENV = "EMZIP_GLOBUS_CLIENT_SECRET"
MAPPED_ENV = "EMZIP_GLOBUS_MAPPED_COLLECTIONS"

__all__ = [
    "assign_batches",
    "backend_from_config",
    "batch_files",
    "outbox_file",
    "prune_shipped_outbox",
    "record_transfer",
]


def _globus_secret(config: dict[str, Any]) -> tuple[str, str]:
    client_id = os.environ.get(CLIENT_ID_ENV) or config.get("client_id")
    secret = os.environ.get(CLIENT_SECRET_ENV)
    block_name = config.get("secret_block")
    if secret is None and block_name:
        from prefect.blocks.system import Secret

        block: Any = Secret.load(block_name)  # sync in a sync context
        secret = str(block.get())
    if not client_id or not secret:
        raise PermanentTransferError(
            f"Globus credentials missing: set {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV}, "
            "or name a Prefect Secret block holding the client secret in the transfer config's 'secret_block'"
        )
    return str(client_id), secret


def backend_from_config(config: dict[str, Any]) -> TransferBackend:
    """Build a backend from a JSON config: ``{"kind": "local", "destination": DIR}`` or a Globus one.

    Globus: ``{"kind": "globus", "source_collection", "destination_collection", "source_root",
    "destination_root", optional "mapped_collections", "secret_block", "token_storage",
    "poll_seconds", "timeout_seconds"}``; the secret comes from the environment or the Secret block.
    """
    kind = config.get("kind", "local")
    if kind == "local":
        return LocalTransfer(config["destination"])
    if kind == "globus":
        client_id, secret = _globus_secret(config)
        listed = config.get("mapped_collections") or os.environ.get(MAPPED_ENV, "").split(",")
        mapped = tuple(str(m).strip() for m in listed if str(m).strip())
        settings = GlobusSettings(
            source_collection=config["source_collection"],
            destination_collection=config["destination_collection"],
            source_root=config["source_root"],
            destination_root=config["destination_root"],
            mapped_collections=mapped,
            poll_seconds=float(config.get("poll_seconds", 15.0)),
            timeout_seconds=float(config.get("timeout_seconds", 6 * 3600.0)),
        )
        client = transfer_client_from_credentials(
            client_id, secret, mapped_collections=mapped, token_storage=str(config.get("token_storage", "memory"))
        )
        return GlobusTransfer(client, settings)
    raise ValueError(f"unknown transfer backend kind {kind!r} (local or globus)")


def assign_batches(ledger: Ledger, worker: str, records: list[BlockRecord], batch_size: int) -> dict[str, list[str]]:
    """Group verified, claimed blocks into batches; blocks that already have a batch keep it."""
    batches: dict[str, list[str]] = {}
    fresh = [r for r in records if not r.batch_id]
    for r in records:
        if r.batch_id:
            batches.setdefault(r.batch_id, []).append(r.block_id)
    for start in range(0, len(fresh), max(batch_size, 1)):
        group = fresh[start : start + batch_size]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        batch_id = f"{group[0].block.volume}-{stamp}-{uuid.uuid4().hex[:6]}"
        for r in group:
            ledger.annotate(r.block_id, worker, batch_id=batch_id)
        batches[batch_id] = [r.block_id for r in group]
    return batches


def outbox_file(outbox: Path, path: Path, block_id: str) -> OutboxFile:
    """An outbox file as a transfer item: its sha256 now, its size, its path below the outbox."""
    if not path.is_file():
        raise PermanentTransferError(f"{block_id}: outbox file {path} is missing")
    return OutboxFile(path, file_sha256(path), path.stat().st_size, str(path.relative_to(outbox)), block_id)


def batch_files(outbox: Path, batch_id: str, records: list[BlockRecord]) -> TransferBatch:
    """The outbox files (container and provenance record) of a batch's blocks, with sha256.

    A container whose bytes changed since verification is refused, never shipped.
    """
    files: list[OutboxFile] = []
    for r in records:
        for path in outbox_paths(outbox, r.block, r.version):
            item = outbox_file(outbox, path, r.block_id)
            if path.suffix == ".emz" and item.sha256 != r.compressed_sha256:
                raise PermanentTransferError(f"{r.block_id}: outbox container {path} changed since it was verified")
            files.append(item)
    return TransferBatch(batch_id, records[0].block.volume, tuple(files))


def record_transfer(outbox: Path, record: BlockRecord, report: TransferReport) -> Path:
    """Write the transfer's outcome into the block's provenance record; returns the record's path."""
    _, prov_path = outbox_paths(outbox, record.block, record.version)
    document = load_record(prov_path)
    document["transfer"] = {
        "backend": report.backend,
        "destination_hint": next((f.destination for f in report.files if f.block_id == record.block_id), None),
        "batch_id": report.batch_id,
        "submission_id": report.submission_id,
        "task_id": report.task_id,
        "status": report.status,
        "bytes_transferred": report.bytes_transferred,
        "bytes_checksummed": report.bytes_checksummed,
        "effective_bytes_per_second": report.effective_bytes_per_second,
        "faults": report.faults,
        "seconds": round(report.seconds, 3),
        "events": report.events,
    }
    write_record(prov_path, document)
    return prov_path


def prune_shipped_outbox(ledger: Ledger, outbox: Path, volume: str, dry_run: bool = True) -> list[tuple[Path, str]]:
    """Outbox copies of blocks shipped by earlier runs (and of shipped versions since superseded).

    A run prunes the batches it ships itself as their transfers confirm them
    (``tasks.transfer.prune_outbox``); this covers what earlier runs shipped while pruning was
    off. A copy goes only when its block (or version) is shipped in the ledger, its provenance
    record holds a ``SUCCEEDED`` transfer, and the file still has the sha256 that was shipped.
    Returns (path, what happened) for every copy looked at; every deletion is noted in the ledger.
    """
    actions: list[tuple[Path, str]] = []
    for record in ledger.blocks(volume, SHIPPED_STATES):
        shipped = [(record.version, record.compressed_sha256)]
        shipped += [
            (v["version"], v["compressed_sha256"])
            for v in ledger.versions(record.block_id)
            if v["state"] in SHIPPED_STATES
        ]
        for version, sha256 in shipped:
            container, provenance = outbox_paths(outbox, record.block, version)
            if not container.is_file():
                continue
            try:
                confirmed = load_record(provenance).get("transfer", {}).get("status") == "SUCCEEDED"
            except ValueError:
                confirmed = False
            if not confirmed or sha256 is None or file_sha256(container) != sha256:
                actions.append((container, "kept: transfer not confirmed in its record, or the file changed"))
                continue
            if dry_run:
                actions.append((container, "dry run: would delete"))
                continue
            container.unlink()
            provenance.unlink(missing_ok=True)
            ledger.note(
                record.block_id, f"outbox {container.name} (version {version}) deleted: shipped by an earlier run"
            )
            actions.append((container, "deleted"))
    return actions
