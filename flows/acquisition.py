"""The edge flow: scan an acquisition, compress and verify its ready blocks, ship them.

Composition only; the work is in ``tasks``. Each block walks discovered -> encoded -> verified ->
shipped in the ledger, so a run that is killed and started again picks up every block where it
stopped: encoded blocks are verified (not re-encoded), verified blocks are shipped as the batch
they were assigned (same submission id, never a second copy). A block that fails is marked failed
with the reason and the flow goes on with the others.
"""

from __future__ import annotations

import time
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.futures import PrefectFuture

from codec.settings import Settings
from flows.events import TRANSFER_COMPLETED, VOLUME_RESOURCE_PREFIX
from flows.parameters import CodecParameters, TransferConfig, codec_overrides, transfer_dict
from flows.progress import ProgressBar
from flows.steps import BlockData, encode_block, read_block, ship_batch, verify_block
from tasks.edge.encoding import EncodedBlock, outbox_paths
from tasks.edge.pruning import prune_raw_files
from tasks.edge.readiness import DEFAULT_MARKER, scan_volume
from tasks.edge.shipping import (
    assign_batches,
    backend_from_config,
    batch_files,
    outbox_file,
    prune_shipped_outbox,
    record_transfer,
)
from tasks.edge.verification import VerifyResult
from tasks.edge.verifier_pool import verifier_count
from tasks.figures import block_bitrate_png
from tasks.source.grid import BlockRef, choose_block_shape
from tasks.source.revisions import SourceChangedError, find_revisions
from tasks.source.volumes import Volume, VolumeSource, open_volume, resolve_source
from tasks.store.diskspace import OutOfSpaceError, out_of_space
from tasks.store.failpoints import failpoint
from tasks.store.ledger import BlockRecord, Ledger, LedgerError, worker_identity
from tasks.store.provenance import load_record, new_record, write_record
from tasks.transfer import PermanentTransferError, TransferBackend, TransferBatch, TransferError
from tasks.transfer import prune_outbox as prune_outbox_files

EDGE_STATES = ("discovered", "encoded", "verified")
#: Blocks encoded but not yet verified before the flow stops training to wait for the verifiers
#: (they run at idle priority beside training; this bounds how far behind they may fall).
MAX_UNVERIFIED = 32
#: Claims (attempts) after which a failed block is no longer retried by itself; ``emzip retry``
#: puts it back once its cause is fixed.
MAX_EDGE_ATTEMPTS = 3
#: Batches whose transfer runs beside training (a Globus transfer waits minutes for its checksums).
MAX_SHIPPING = 2
#: What the edge does with a coded block whose raw data changed: code it again as a new version, or refuse the run.
CHANGED_SOURCE_ACTIONS = ("recode", "refuse")

T = TypeVar("T")


@dataclass(frozen=True)
class _Run:
    """What stays fixed for every block of one acquisition run."""

    volume: Volume
    grid: tuple[int, int, int]
    source: dict[str, Any]
    settings: Settings
    outbox: Path


def _start_read(run: _Run, record: BlockRecord) -> PrefectFuture[BlockData] | None:
    """Start reading a claimed block's voxels (a task future) if it still needs encoding; else None.

    The flow starts the next block's read before it trains the current one, so the read (and its
    retries) runs beside training instead of between two blocks.
    """
    if record.state != "discovered":
        return None
    return read_block.submit(run.source, record.block_id, record.block.as_json())


def _encode_and_record(
    run: _Run,
    record_in: BlockRecord,
    warm: dict[str, torch.Tensor] | None,
    reading: PrefectFuture[BlockData],
    history: list[dict[str, Any]],
) -> tuple[EncodedBlock, dict[str, torch.Tensor] | None, str | None]:
    """Encode one block version into the outbox, with its provenance record (not yet verified).

    ``reading`` is the block's read, started by ``_start_read`` when the block was claimed;
    ``history`` the block's superseded versions (``Ledger.versions``), recorded in provenance.
    Returns the encoded block, the model's weights and the raw files' stamp taken before the read.
    """
    block, version = record_in.block, record_in.version
    read = reading.result()
    data, read_s = read.voxels, read.seconds
    encoded, state = encode_block(block.block_id, block.as_json(), data, run.settings, str(run.outbox), warm, version)
    record = new_record(
        block,
        volume_shape=run.volume.shape,
        block_shape=run.grid,  # the volume's grid, not this (possibly edge) block's own shape
        dtype=data.dtype.str,
        voxel_size=run.volume.voxel_size,
        units=run.volume.units,
        source=run.source,
    )
    record["block"]["version"] = version
    if history:
        record["supersedes"] = [
            {key: item[key] for key in ("version", "bounds", "state", "raw_sha256", "compressed_sha256", "reason")}
            for item in history
        ]
    record["encoding"] = encoded.encoding
    record["verification"] = None
    record["timings_s"] = {"read": round(read_s, 3), "encode": round(encoded.seconds, 3)}
    write_record(outbox_paths(run.outbox, block, version)[1], record)
    failpoint("record.written")
    return encoded, state, read.stamp


def _bring_to_encoded(
    ledger: Ledger,
    worker: str,
    run: _Run,
    record: BlockRecord,
    warm: dict[str, torch.Tensor] | None,
    reading: PrefectFuture[BlockData] | None,
) -> tuple[BlockRecord | None, dict[str, torch.Tensor] | None]:
    """Encode a claimed block if it still needs it; None if it must start over (outbox files lost).

    ``reading`` is the block's read (``_start_read``), None when it needs no encoding.
    """
    outbox = run.outbox
    if record.state == "discovered":
        if reading is None:
            raise ValueError(f"{record.block_id}: needs encoding but no read was started for it")
        history = ledger.versions(record.block_id) if record.version > 1 else []
        encoded, warm, stamp = _encode_and_record(run, record, warm, reading, history)
        record = ledger.advance(
            record.block_id,
            worker,
            "encoded",
            raw_sha256=encoded.raw_sha256,
            raw_bytes=encoded.raw_bytes,
            compressed_sha256=encoded.compressed_sha256,
            compressed_bytes=encoded.compressed_bytes,
            codec=encoded.codec,
            bits_per_voxel=encoded.bits_per_voxel,
            outbox_path=str(encoded.container_path),
            raw_stamp=stamp,
            timings={"encode": round(encoded.seconds, 3)},
        )
    if record.state == "encoded" and not all(p.is_file() for p in outbox_paths(outbox, record.block, record.version)):
        get_run_logger().warning("%s: outbox files missing after a restart; encoding again", record.block_id)
        ledger.advance(record.block_id, worker, "discovered", release=True)
        return None, warm
    return record, warm


def _submit_verification(record: BlockRecord, outbox: Path) -> Any:
    """Start the separate verifying decode of an encoded block (a future: the flow goes on)."""
    container, prov_path = outbox_paths(outbox, record.block, record.version)
    prov = load_record(prov_path)
    return verify_block.submit(
        record.block_id,
        str(container),
        prov["encoding"]["raw_sha256"],
        prov["encoding"]["compressed_sha256"],
        list(record.block.shape),
        prov["block"]["dtype"],
    )


def _record_verification(
    ledger: Ledger, worker: str, record: BlockRecord, outbox: Path, result: VerifyResult
) -> BlockRecord:
    """Write a passed verification into the block's record, then move the ledger to verified."""
    _, prov_path = outbox_paths(outbox, record.block, record.version)
    prov = load_record(prov_path)
    prov["verification"] = result.as_json()
    prov["timings_s"]["verify"] = result.seconds
    write_record(prov_path, prov)
    failpoint("verify.done")
    return ledger.advance(record.block_id, worker, "verified", timings={"verify": result.seconds})


def _block_failed(ledger: Ledger, worker: str, record: BlockRecord, exc: Exception) -> Exception | None:
    """Mark a block failed with the reason; on a full disk keep it retryable and return the error."""
    logger = get_run_logger()
    if out_of_space(exc):  # not the block's fault: keep it retryable, stop taking more
        logger.error("%s: stopped, disk full: %s; the block stays %s", record.block_id, exc, record.state)
        ledger.release(record.block_id, worker)
        return exc
    logger.error("%s: failed: %s", record.block_id, exc)
    ledger.fail(record.block_id, worker, f"{type(exc).__name__}: {exc}")
    return None


def _finished(future: Any) -> bool:
    """Whether a task's future has finished, asked of the future it wraps where there is one.

    ``PrefectFuture.state`` reads the task run from the Prefect API until the run is final: a
    request (and a new API client) per future each time the flow looks, which on a 2-core edge
    node took CPU from training and the verifiers. The thread pool's and Dask's futures know
    locally; only other kinds of future are asked through the API.
    """
    wrapped = getattr(future, "wrapped_future", None)
    done = getattr(wrapped, "done", None)
    if callable(done):
        return bool(done())
    return bool(future.state.is_final())


def _due(pending: list[T], wait_for: int, future_of: Callable[[T], Any | None]) -> tuple[list[T], list[T]]:
    """Split work in flight (oldest first) into what to finish now and what keeps running.

    Due: every item whose future is done (or that has none), and the oldest ones beyond
    ``wait_for`` still running (finishing them waits on their futures).
    """
    due: list[T] = []
    still: list[T] = []
    for index, item in enumerate(pending):
        future = future_of(item)
        if len(pending) - index > wait_for or future is None or _finished(future):
            due.append(item)
        else:
            still.append(item)
    return due, still


@dataclass
class _Shipment:
    """One batch on its way: its transfer runs in a task (a future) while the flow goes on."""

    batch_id: str
    ids: list[str]
    members: list[BlockRecord]
    batch: TransferBatch | None
    future: Any | None
    error: TransferError | None = None
    """Set when the batch failed before its transfer could start (a changed outbox file)."""


def _start_shipping(
    ledger: Ledger,
    worker: str,
    backend: TransferBackend,
    outbox: Path,
    records: list[BlockRecord],
    batch_size: int,
    retries: int,
) -> list[_Shipment]:
    """Batch claimed verified blocks and start each batch's transfer (``ship_batch.submit``).

    A batch's submission id is stored in the ledger before its transfer starts, so a run killed
    mid-transfer resubmits under the same id (Globus then never makes a second copy).
    """
    shipments: list[_Shipment] = []
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
            shipments.append(_Shipment(batch_id, ids, members, None, None, exc))
            continue
        future = ship_batch.with_options(retries=retries).submit(backend, batch, submission_id)
        shipments.append(_Shipment(batch_id, ids, members, batch, future))
    return shipments


def _finish_shipping(
    ledger: Ledger,
    worker: str,
    backend: TransferBackend,
    outbox: Path,
    shipment: _Shipment,
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


def _table_row(record: BlockRecord) -> dict[str, Any]:
    timings = record.timings
    return {
        "block": record.block_id,
        "state": record.state,
        "codec": record.codec or "",
        "bits_per_voxel": round(record.bits_per_voxel, 3) if record.bits_per_voxel else None,
        "ratio_to_raw": round(8.0 / record.bits_per_voxel, 3) if record.bits_per_voxel else None,
        "seconds": round(sum(timings.values()), 1),
        "reason": record.reason or "",
    }


@flow(name="emzip-acquisition")
def acquisition_flow(
    acquisition: str,
    outbox: str,
    transfer: TransferConfig,
    ledger: str | None = None,
    layout: str | None = None,
    volume_name: str | None = None,
    block_shape: list[int] | None = None,
    settle_seconds: float = 30.0,
    marker: str | None = DEFAULT_MARKER,
    assume_complete: bool = False,
    codec: CodecParameters | None = None,
    batch_size: int = 8,
    max_blocks: int | None = None,
    transfer_retries: int = 4,
    prune_outbox: str = "off",
    prune_raw: str = "off",
    on_changed_source: str = "recode",
    voxel_size: list[float] | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    """Scan ``acquisition``, compress and verify every ready block, ship them with ``transfer``.

    ``transfer`` is a backend config (``{"kind": "local", "destination": DIR}`` by default, or
    Globus, see ``tasks.edge.shipping.backend_from_config``). ``codec`` holds ``codec.Settings`` fields.
    The ledger defaults to ``<outbox>/ledger.sqlite``. A batch whose transfer fails transiently is
    retried ``transfer_retries`` times with backoff, then left verified for the next run. Returns a
    summary (also an artifact). Pruning is off by default; ``"dry-run"`` logs in the ledger what
    would go, ``"delete"`` deletes: outbox copies once the destination confirmed their checksum
    (``prune_outbox``), raw acquisition files once every block reading them is shipped (``prune_raw``).

    Blocks already coded are checked against the source as it is now (``tasks.source.revisions``): a
    block whose bounds grew (a tail coded while the acquisition was shorter) is coded again as its
    next version, and so is one whose raw data changed, with a WARNING naming its slices
    (``on_changed_source="recode"``); ``"refuse"`` stops the run instead (``SourceChangedError``,
    naming the slices) before anything is coded, shipped or pruned. ``voxel_size`` (z, y, x) and
    ``unit``: the operator's, for an acquisition that does not record them (TIFF slices); they
    reach the restored image's OME-Zarr scales and units.
    """
    if on_changed_source not in CHANGED_SOURCE_ACTIONS:
        raise ValueError(f"on_changed_source must be one of {CHANGED_SOURCE_ACTIONS}, got {on_changed_source!r}")
    logger = get_run_logger()
    outbox_path = Path(outbox)
    size = (float(voxel_size[0]), float(voxel_size[1]), float(voxel_size[2])) if voxel_size else None
    source = resolve_source(acquisition, volume_name, layout, voxel_size=size, units=unit)  # type: ignore[arg-type]
    # The separate verifying decode (verifier pool) follows every encode here: the codec's own
    # in-process check would be a second decode of the same block (the record says which ran).
    settings = Settings().with_overrides(**{"verify": False, **codec_overrides(codec)})
    backend = backend_from_config(transfer_dict(transfer))
    ledger_db = Ledger(ledger or outbox_path / "ledger.sqlite")
    worker = worker_identity()
    started = time.monotonic()
    try:
        # Before anything is read, encoded or pruned: the volume id is this acquisition's alone.
        source = bind_acquisition(ledger_db, source, outbox_path, explicit=volume_name is not None)
        if block_shape:
            grid = (int(block_shape[0]), int(block_shape[1]), int(block_shape[2]))
        else:
            opened = open_volume(source, settled_before=time.time() - settle_seconds)
            grid = choose_block_shape(opened.chunk, whole_slices=source.layout == "slices", shape=opened.shape)
        report = scan_volume(
            source,
            grid,
            settle_seconds=settle_seconds,
            marker=marker,
            assume_complete=assume_complete,
        )
        added = ledger_db.discover(report.ready)
        recoded = _revise(ledger_db, report.volume, report.ready, refuse=on_changed_source == "refuse")
        retried = ledger_db.retry_failed(volume=source.name, max_attempts=MAX_EDGE_ATTEMPTS, to_state="discovered")
        if retried:
            logger.warning(
                "%s: %d failed blocks retried (at most %d attempts each)", source.name, retried, MAX_EDGE_ATTEMPTS
            )
        logger.info(
            "%s: volume %s, %d blocks ready (%d new), %d waiting",
            source.name,
            report.volume.shape,
            len(report.ready),
            added,
            len(report.waiting),
        )
        run = _Run(report.volume, grid, source.as_json(), settings, outbox_path)
        todo = len(ledger_db.pending(source.name))
        progress = ProgressBar(key=f"progress-{_key(source.name)}", description=f"{source.name}: blocks")
        done = 0
        warm: dict[str, torch.Tensor] | None = None
        verified: list[BlockRecord] = []
        disk_full: Exception | None = None
        held_back: set[str] = set()  # verified, but their transfer failed in this run: the next run ships them
        shipped_now: list[str] = []
        # Encoded blocks wait in ``to_verify`` and go to the verifier pool as it has room (each
        # worker busy and one more queued for it): the verifying decodes take what training leaves
        # of the CPU while the next blocks train, and the flow waits for them only when
        # ``MAX_UNVERIFIED`` blocks are behind, and at the end of the run, when every core is free.
        to_verify: list[BlockRecord] = []
        verifying: list[tuple[BlockRecord, Any]] = []
        slots = 2 * verifier_count()

        def settle(wait_for: int) -> None:
            """Record finished verifications, waiting until at most ``wait_for`` are still running."""
            nonlocal disk_full
            due, verifying[:] = _due(verifying, wait_for, lambda item: item[1])
            for pending, future in due:
                try:
                    verified.append(_record_verification(ledger_db, worker, pending, outbox_path, future.result()))
                except Exception as exc:
                    disk_full = disk_full or _block_failed(ledger_db, worker, pending, exc)

        def feed() -> None:
            """Hand waiting blocks to the verifier pool while it has room (none once the disk is full:
            they stay encoded, and the next run verifies them)."""
            nonlocal disk_full
            while to_verify and len(verifying) < slots and disk_full is None:
                pending = to_verify.pop(0)
                try:
                    verifying.append((pending, _submit_verification(pending, outbox_path)))
                except Exception as exc:
                    disk_full = disk_full or _block_failed(ledger_db, worker, pending, exc)

        def catch_up(behind: int) -> None:
            """Record what the verifiers finished; wait (oldest first) until at most ``behind``
            blocks are still unverified."""
            settle(wait_for=len(verifying))  # only those already done
            feed()
            while verifying and len(to_verify) + len(verifying) > behind:
                settle(wait_for=len(verifying) - 1)
                feed()

        # Transfers run in tasks too, while the next blocks train: at most ``MAX_SHIPPING`` batches.
        shipping: list[_Shipment] = []

        def land(wait_for: int) -> None:
            """Record finished transfers, waiting until at most ``wait_for`` are still running.

            A batch whose transfer failed is held back: its blocks stay verified for the next run.
            """
            due, shipping[:] = _due(shipping, wait_for, lambda shipment: shipment.future)
            for shipment in due:
                shipped = _finish_shipping(ledger_db, worker, backend, outbox_path, shipment, prune_outbox)
                held_back.update(i for i in shipment.ids if i not in shipped)
                shipped_now.extend(shipped)

        def claim_next(taken: int) -> tuple[BlockRecord, PrefectFuture[BlockData] | None] | None:
            """Claim the next block (None when there is none, or ``max_blocks`` are taken) and start its read."""
            if max_blocks is not None and taken >= max_blocks:
                return None
            claimed = ledger_db.claim(worker, EDGE_STATES, volume=source.name, limit=1, exclude=held_back)
            return (claimed[0], _start_read(run, claimed[0])) if claimed else None

        upcoming: tuple[BlockRecord, PrefectFuture[BlockData] | None] | None = None
        while disk_full is None:
            upcoming = upcoming or claim_next(done)
            if upcoming is None:
                break
            record, reading = upcoming
            # The next block is claimed and its read started now, so the read runs while this one
            # trains. A claim still held when the run stops is released with the others (finally).
            upcoming = claim_next(done + 1)
            try:
                outcome, warm = _bring_to_encoded(ledger_db, worker, run, record, warm, reading)
                if outcome is None:
                    continue  # its outbox files were lost: back to discovered, encoded again next turn
                if outcome.state == "verified":  # verified before a restart: ship it
                    verified.append(outcome)
                else:
                    to_verify.append(outcome)
            except Exception as exc:
                disk_full = _block_failed(ledger_db, worker, record, exc)
            done += 1
            catch_up(behind=MAX_UNVERIFIED)
            land(wait_for=MAX_SHIPPING)
            if len(verified) >= batch_size:
                shipping.extend(
                    _start_shipping(ledger_db, worker, backend, outbox_path, verified, batch_size, transfer_retries)
                )
                verified = []
            progress.update(100.0 * done / max(todo, 1))
        catch_up(behind=0)
        if verified:
            shipping.extend(
                _start_shipping(ledger_db, worker, backend, outbox_path, verified, batch_size, transfer_retries)
            )
        land(wait_for=0)
        if disk_full is not None:
            raise OutOfSpaceError(f"{source.name}: run stopped, disk full: {disk_full}") from disk_full
        progress.update(100.0)
        if prune_outbox != "off":
            earlier = prune_shipped_outbox(ledger_db, outbox_path, source.name, dry_run=prune_outbox != "delete")
            if earlier:
                logger.info("%s: outbox copies shipped by earlier runs: %d looked at", source.name, len(earlier))
        if prune_raw != "off":
            pruned = prune_raw_files(ledger_db, report.volume, grid, dry_run=prune_raw != "delete")
            kept = ", ".join(f"{count} {why}" for why, count in sorted(pruned.kept_reasons.items())) or "none"
            logger.info(
                "%s: raw files %s: %d; kept: %s",
                source.name,
                "deleted" if not pruned.dry_run else "deletable",
                len(pruned.files),
                kept,
            )
        this_run = {"coded": done, "shipped": len(shipped_now), "recoded": recoded}
        summary = _summarise(
            ledger_db, source.name, report.volume.shape, len(report.waiting), time.monotonic() - started, this_run
        )
        return {**summary, "grid": list(grid)}
    finally:
        ledger_db.release_all(worker)  # an exception must not leave blocks claimed until the lease ends
        ledger_db.close()


def _revise(ledger: Ledger, volume: Volume, ready: list[BlockRef], *, refuse: bool) -> list[str]:
    """Supersede coded blocks that grew or whose raw data changed (``tasks.source.revisions``); returns their ids.

    Changed raw data is refused instead (``SourceChangedError`` naming every block and its
    slices) when ``refuse``; grown blocks are always coded again: a longer acquisition is normal.
    """
    logger = get_run_logger()
    revisions, renew = find_revisions(volume, ledger.blocks(volume.source.name), {b.block_id: b for b in ready})
    for block_id, stamp in renew.items():
        ledger.restamp(block_id, stamp)
    changed = [r for r in revisions if not r.grown]
    if changed and refuse:
        listed = "; ".join(f"{r.old.block_id}: {r.reason}" for r in changed)
        raise SourceChangedError(
            f"{volume.source.location}: raw data changed after it was coded, run refused (on_changed_source=refuse): "
            f"{listed}. Restore the original files, or run with on_changed_source=recode to code and ship the "
            "changed blocks again as new versions"
        )
    recoded = []
    for revision in revisions:
        version = revision.old.version
        new_version = ledger.supersede(revision.block, revision.reason)
        if new_version is None:
            logger.warning(
                "%s: %s; another run holds it: looked at again next run", revision.old.block_id, revision.reason
            )
            continue
        logger.warning(
            "%s: %s; version %d is coded again as version %d",
            revision.old.block_id,
            revision.reason,
            version,
            new_version,
        )
        recoded.append(revision.old.block_id)
    return recoded


def _legacy_location(outbox: Path, volume: str) -> str | None:
    """Where a volume's blocks came from, by its first provenance record in the outbox (None if none)."""
    folder = outbox / volume
    for path in sorted(folder.glob("*.prov.json")) if folder.is_dir() else []:
        try:
            return str(load_record(path)["volume"]["source"]["location"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def bind_acquisition(ledger: Ledger, source: VolumeSource, outbox: Path, *, explicit: bool) -> VolumeSource:
    """Bind the source's volume id to its acquisition in the ledger; returns the source to run.

    A ledger written before acquisition ids holds volumes named after their folders. A run of
    the same folder (by the location in the volume's provenance records) continues that volume
    under its old name; an operator's explicit name continues it unless its records name another
    folder. Any other source whose id is taken is refused here (``LedgerError``), before a block is
    read or a raw file pruned.
    """
    if source.acquisition is None:
        raise ValueError(f"{source.location}: the acquisition flow needs the acquisition's identity")
    acquisition = source.acquisition
    adopt = False
    if explicit:
        legacy = _legacy_location(outbox, source.name)
        adopt = legacy is None or legacy == source.location
    else:
        stem = source.name.rsplit("-", 1)[0]
        unbound = ledger.has_blocks(stem) and ledger.volume_binding(stem) is None
        if unbound and _legacy_location(outbox, stem) == source.location:
            source, adopt = replace(source, name=stem), True
    ledger.bind_volume(source.name, acquisition.id, acquisition.location, adopt_legacy=adopt)
    return source


def _key(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())[:60] or "volume"


def _summarise(
    ledger: Ledger, volume: str, shape: tuple[int, ...], waiting: int, seconds: float, this_run: dict[str, Any]
) -> dict[str, Any]:
    """The run's artifacts (table, summary) and its return value: this run's counts apart from the volume's totals."""
    records = ledger.blocks(volume)
    rows = [_table_row(r) for r in records]
    create_table_artifact(rows, key=f"blocks-{_key(volume)}", description=f"{volume}: every block in the ledger")
    progress = ledger.progress(volume)
    coded = [r for r in records if r.compressed_bytes and r.state in ("verified", "shipped", "restored")]
    voxels = sum(r.block.voxels for r in coded)
    bits = 8.0 * sum(r.compressed_bytes or 0 for r in coded) / max(voxels, 1)
    failures = ledger.failures(volume)
    lines = [
        f"# emzip acquisition: {volume}",
        "",
        f"This run: {this_run['coded']} blocks taken, {this_run['shipped']} shipped, "
        f"{len(this_run['recoded'])} coded again as new versions (grown or changed).",
        "",
        f"Volume in total: shape {list(shape)}; {progress['shipped'] + progress['restored']} blocks shipped, "
        f"{progress['failed']} failed, {sum(progress[s] for s in EDGE_STATES)} pending, {waiting} waiting for data.",
        "",
        f"Bits per voxel over shipped blocks: **{bits:.3f}** (raw 8.000, ratio {8.0 / bits if bits else 0:.2f}x); "
        f"run took {seconds:.1f} s.",
    ]
    if failures:
        lines += ["", "## Failed blocks", "", *[f"- `{block}`: {reason}" for block, reason in failures]]
    if coded:
        png = block_bitrate_png([(r.block_id, r.codec or "", r.bits_per_voxel or 0.0) for r in coded], volume)
        lines += [
            "",
            "## Bits per voxel per block",
            "",
            f"![bits per voxel](data:image/png;base64,{b64encode(png).decode()})",
        ]
    lines += ["", "## Blocks", "", "| block | state | codec | bits/voxel | reason |", "|---|---|---|---|---|"]
    lines += [f"| `{r['block']}` | {r['state']} | {r['codec']} | {r['bits_per_voxel']} | {r['reason']} |" for r in rows]
    create_markdown_artifact("\n".join(lines), key=f"summary-{_key(volume)}", description=f"{volume}: run summary")
    return {
        "volume": volume,
        "shape": list(shape),
        "progress": progress,
        "bits_per_voxel": bits,
        "failures": failures,
        "seconds": seconds,
        "this_run": this_run,
    }
