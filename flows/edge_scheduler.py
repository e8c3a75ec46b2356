"""The edge's scheduler: one acquisition run's blocks, from claim to shipped, on as many workers as it has.

A block moves through these states in the flow (the ledger's states in brackets):

1. **claimed** (discovered, encoded or verified): taken from the ledger by this run.
2. **with a worker** (discovered): ``code_block`` reads, codes, records and verifies it on a
   worker (a thread, or a Dask worker process here or on another node), in a task of up to
   ``MAX_BLOCKS_PER_TASK`` blocks. A block the ledger already holds encoded is only verified
   (``verify_block``).
3. **verified** (verified): the worker's result is written into the ledger, in one transaction.
4. **shipping** (verified): batched; each batch's transfer runs in a task (``flows.edge_shipping``).
5. **shipped** (shipped).

The first block that may train decides the acquisition's model alone (``codec.shared``): no
other block goes to a worker until it is back, so every later block is coded with that model,
wherever it runs. A block whose content no longer fits the model is decided again on its worker;
the new model goes to the blocks handed out after it. Up to ``width`` tasks run at once, and on
Dask one more per worker waits at it (``queued``); when all are handed out the flow waits until one
finishes. The flow is the only writer of its ledger; workers write only the outbox.

A worker whose write into the outbox fails (not for lack of space) hands its blocks back,
unchanged in the ledger. When the flow can still write the outbox itself, the fault is that
worker's node (a lost mount): the worker is retired from the Dask cluster and the blocks go to the
others in this run. When the flow cannot write it either, or no other worker is left, the run
stops taking blocks, as on a full disk, and says why; the next run codes what is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prefect import get_run_logger

from codec.settings import Settings
from flows.dask_workers import retire_worker
from flows.edge_shipping import Shipment, finish_shipping, start_shipping
from flows.progress import ProgressBar
from flows.steps import DISK_FULL, FAILED, OUTBOX_FAILED, code_blocks_task, verify_block
from tasks.edge.coding import BlockJob, CodedBlock
from tasks.edge.encoding import outbox_paths, probe_outbox
from tasks.edge.verification import VerifyResult
from tasks.source.volumes import Volume
from tasks.store.diskspace import out_of_space
from tasks.store.failpoints import failpoint
from tasks.store.ledger import BlockRecord, Ledger
from tasks.store.provenance import load_record, write_record
from tasks.transfer import TransferBackend

if TYPE_CHECKING:
    from codec.shared import SharedModel

__all__ = ["EDGE_STATES", "MAX_SHIPPING", "EdgeRun", "EdgeScheduler", "block_failed"]

EDGE_STATES = ("discovered", "encoded", "verified")
#: Batches whose transfer runs beside the coding (a Globus transfer waits minutes for its checksums).
MAX_SHIPPING = 2
#: The most blocks one coding task holds (what a killed worker's task codes again).
MAX_BLOCKS_PER_TASK = 4
#: How often the flow looks whether a worker finished, while every worker is busy (futures of
#: the thread pool and of Dask answer locally: no API request).
POLL_SECONDS = 0.005
T = TypeVar("T")


@dataclass(frozen=True)
class EdgeRun:
    """What stays fixed for every block of one acquisition run."""

    volume: Volume
    grid: tuple[int, int, int]
    source: dict[str, Any]
    settings: Settings
    outbox: Path
    width: int = 1
    """Workers: tasks running at once (the worker threads of the flow's task runner)."""
    queued: int = 1
    """Tasks handed out per worker: 2 on Dask, where the next task waits at the worker and starts the
    moment the one before finishes, not after the flow heard of it and handed out another."""
    batch_size: int = 8
    transfer_retries: int = 4
    prune_outbox: str = "off"
    max_blocks: int | None = None


@dataclass
class _WithWorker:
    """Blocks a worker has: coding (``coding`` true: one task codes them in order) or verifying one."""

    records: list[BlockRecord]
    future: Any
    coding: bool


@dataclass
class EdgeScheduler:
    """One acquisition run: claims blocks, hands them to workers, records them, ships them."""

    ledger: Ledger
    worker: str
    run: EdgeRun
    backend: TransferBackend
    progress: ProgressBar
    todo: int
    shared: SharedModel | None = None
    taken: int = 0
    coded_bytes: int = 0
    """Raw bytes of the blocks coded by this run."""
    with_workers: list[_WithWorker] = field(default_factory=list)
    verified: list[BlockRecord] = field(default_factory=list)
    shipping: list[Shipment] = field(default_factory=list)
    shipped_now: list[str] = field(default_factory=list)
    held_back: set[str] = field(default_factory=set)
    """Verified, but their transfer failed in this run: the next run ships them."""
    disk_full: Exception | None = None
    outbox_failed: OSError | None = None
    """The outbox cannot be written (by the flow, or by any worker left): the run stops taking blocks."""
    retired: dict[str, str] = field(default_factory=dict)
    """Dask workers retired because their outbox writes failed: address -> the error."""
    width: int = 0
    """Tasks with workers at once: the run's width, less the workers retired."""
    deciding: bool = False
    """A block that decides the acquisition's model is with a worker: no other goes out meanwhile."""
    decided: bool = False
    exhausted: bool = False
    started: float = field(default_factory=time.monotonic)
    model_ready: float | None = None
    """When the acquisition's model was decided (monotonic), for ``model_seconds``."""
    last_verified: float | None = None

    def __post_init__(self) -> None:
        self.width = self.width or self.run.width

    @property
    def stopped(self) -> Exception | None:
        """Why the run stopped taking blocks (a full disk, an outbox nobody can write); None while it goes on."""
        return self.disk_full or self.outbox_failed

    def run_all(self) -> None:
        """Every claimable block to shipped (or failed, or held back), as far as this run can take it."""
        while self.stopped is None:
            self.hand_out()
            if not self.with_workers:
                break
            self.take_back(wait=len(self.with_workers) >= self._room() or self.exhausted or self.deciding)
            self.ship(wait_for=MAX_SHIPPING)
        while self.with_workers:  # a full disk stops the hand-out, not the blocks already out
            self.take_back(wait=True)
        self.ship(wait_for=0, everything=True)

    # -- 1, 2: claim and hand out ---------------------------------------------------------------

    def hand_out(self) -> None:
        """Claim blocks and give them to workers while there is room (one alone while it decides the model).

        Blocks to code go in tasks of up to ``MAX_BLOCKS_PER_TASK`` (fewer when that would leave
        workers idle at the end): a task run's fixed cost is then paid once for several blocks.
        """
        while not (self.exhausted or self.deciding or self.stopped) and len(self.with_workers) < self._room():
            self.deciding = self.shared is None and not self.decided and self.run.settings.training_steps() > 0
            left = max(self.todo - self.taken, 1)
            size = 1 if self.deciding else max(1, min(MAX_BLOCKS_PER_TASK, left // self._room()))
            batch: list[BlockRecord] = []
            while len(batch) < size:
                record = self._claim()
                if record is None:
                    break
                record = self._needs_coding(record)
                if record is not None:
                    batch.append(record)
            if not batch:
                self.deciding = False
                continue
            jobs = [self._job(record) for record in batch]
            label = batch[0].block_id + (f" +{len(batch) - 1}" if len(batch) > 1 else "")
            future = code_blocks_task.submit(label, jobs, self.shared, self.deciding)
            self.with_workers.append(_WithWorker(batch, future, coding=True))

    def _room(self) -> int:
        """Tasks with workers at most: ``queued`` per worker."""
        return self.width * self.run.queued

    def _claim(self) -> BlockRecord | None:
        """The next block for this run (None when none is left, or ``max_blocks`` are taken)."""
        if self.exhausted or (self.run.max_blocks is not None and self.taken >= self.run.max_blocks):
            self.exhausted = True
            return None
        claimed = self.ledger.claim(
            self.worker, EDGE_STATES, volume=self.run.volume.source.name, limit=1, exclude=self.held_back
        )
        if not claimed:
            self.exhausted = True
            return None
        self.taken += 1
        return claimed[0]

    def _needs_coding(self, record: BlockRecord) -> BlockRecord | None:
        """The record when the block needs coding; else its verification is started, or it goes to shipping."""
        if record.state == "verified":  # verified before a restart: ship it
            self.verified.append(record)
            return None
        if record.state == "encoded":
            if all(p.is_file() for p in outbox_paths(self.run.outbox, record.block, record.version)):
                future = _submit_verification(record, self.run.outbox)
                self.with_workers.append(_WithWorker([record], future, coding=False))
                return None
            get_run_logger().warning("%s: outbox files missing after a restart; coding again", record.block_id)
            return self.ledger.advance(record.block_id, self.worker, "discovered")
        return record

    def _job(self, record: BlockRecord) -> BlockJob:
        volume = self.run.volume
        return BlockJob(
            source=self.run.source,
            block=record.block.as_json(),
            version=record.version,
            volume_shape=volume.shape,
            grid=self.run.grid,
            voxel_size=volume.voxel_size,
            units=volume.units,
            settings=self.run.settings,
            outbox=str(self.run.outbox),
            history=self.ledger.versions(record.block_id) if record.version > 1 else [],
        )

    # -- 3: take back what the workers finished -------------------------------------------------

    def take_back(self, wait: bool) -> None:
        """Record every block the workers finished; with ``wait``, first wait until one has."""
        while wait and not any(finished(item.future) for item in self.with_workers):
            time.sleep(POLL_SECONDS)
        due = [item for item in self.with_workers if finished(item.future)]
        gone = {id(item) for item in due}
        self.with_workers = [item for item in self.with_workers if id(item) not in gone]
        for item in due:
            try:
                outcome = item.future.result()
            except Exception as exc:  # the task itself failed (its worker died twice, ...): all its blocks
                for record in item.records:
                    self.disk_full = self.disk_full or block_failed(self.ledger, self.worker, record, exc)
                self.deciding = False  # not decided: the next block handed out decides the model
                continue
            if not item.coding:
                self._record_verification(item.records[0], outcome)
            else:
                for record, result in zip(item.records, outcome, strict=True):
                    self._record_outcome(record, result)
            self.progress.update(100.0 * (self.taken - len(self.with_workers)) / max(self.todo, 1))

    def _record_outcome(self, record: BlockRecord, result: dict[str, Any]) -> None:
        """One block of a coding task: recorded verified, failed with the reason, or left for the next run."""
        if result["state"] == "coded":
            self._record_coded(record, result["coded"])
            return
        if result["state"] == FAILED:
            get_run_logger().error("%s: failed: %s", record.block_id, result["reason"])
            self.ledger.fail(record.block_id, self.worker, result["reason"])
        elif result["state"] == OUTBOX_FAILED:
            self._outbox_failed(record, result)
        else:  # the disk is full, or an earlier block of its task stopped it: not the block's fault
            get_run_logger().error("%s: not coded (%s): %s", record.block_id, result["state"], result["reason"])
            self._hand_back(record)
            if result["state"] == DISK_FULL:
                self.disk_full = self.disk_full or OSError(28, result["reason"])
        self.deciding = False  # not decided: the next block handed out decides the model

    def _hand_back(self, record: BlockRecord) -> None:
        """Release a block unchanged in the ledger: claimable again, by this run (when it goes on) or the next."""
        self.ledger.release(record.block_id, self.worker)
        self.taken -= 1
        self.exhausted = self.run.max_blocks is not None and self.taken >= self.run.max_blocks

    def _outbox_failed(self, record: BlockRecord, result: dict[str, Any]) -> None:
        """A worker could not write the block into the outbox: hand the block back, and retire the
        worker when the outbox takes the flow's writes and other workers are left; else stop."""
        logger = get_run_logger()
        reason, address = str(result["reason"]), result.get("worker")
        self._hand_back(record)
        if address is not None and address in self.retired:
            return
        broken = probe_outbox(self.run.outbox)
        left = retire_worker(address) if address is not None and broken is None else 0
        if left:
            self.retired[address] = reason  # type: ignore[index]
            self.width = max(1, self.width - 1)
            logger.error(
                "%s: the outbox write failed on Dask worker %s (%s) while the flow writes the outbox: that worker "
                "is retired (%d left) and the block is coded again by another",
                record.block_id, address, reason, left,
            )  # fmt: skip
            return
        why = f"the flow cannot write it either ({broken})" if broken else "no other worker is left"
        logger.error(
            "%s: the outbox write failed (%s); %s: the run stops taking blocks, the block stays %s for the next run",
            record.block_id, reason, why, record.state,
        )  # fmt: skip
        code = broken.errno if broken else result.get("errno")
        message = f"{self.run.outbox}: the outbox cannot be written: {reason}; {why}"
        self.outbox_failed = self.outbox_failed or OSError(code, message)

    def _record_coded(self, record: BlockRecord, coded: CodedBlock) -> None:
        encoded = coded.encoded
        failpoint("flow.coded")
        done = self.ledger.advance_through(
            record.block_id,
            self.worker,
            ("encoded", "verified"),
            raw_sha256=encoded.raw_sha256,
            raw_bytes=encoded.raw_bytes,
            compressed_sha256=encoded.compressed_sha256,
            compressed_bytes=encoded.compressed_bytes,
            codec=encoded.codec,
            bits_per_voxel=encoded.bits_per_voxel,
            outbox_path=str(encoded.container_path),
            raw_stamp=coded.stamp,
            timings={"read": round(coded.read_seconds, 3), "encode": round(encoded.seconds, 3),
                     "verify": coded.verification.seconds},
        )  # fmt: skip
        self.verified.append(done)
        self.coded_bytes += encoded.raw_bytes
        self.last_verified = time.monotonic()
        self._decision_done(coded.shared)

    def _decision_done(self, model: SharedModel | None) -> None:
        """A block came back: adopt the model it was coded with when it is a new one."""
        if model is not None and (self.shared is None or model.key != self.shared.key):
            if self.shared is not None:
                get_run_logger().warning("the acquisition's model was decided again on a block whose content changed")
            self.shared = model
        if self.deciding:
            self.deciding = False
            self.decided = True
            self.model_ready = time.monotonic()

    def _record_verification(self, record: BlockRecord, result: VerifyResult) -> None:
        _, prov_path = outbox_paths(self.run.outbox, record.block, record.version)
        prov = load_record(prov_path)
        prov["verification"] = result.as_json()
        prov["timings_s"]["verify"] = result.seconds
        write_record(prov_path, prov)
        failpoint("verify.done")
        self.verified.append(
            self.ledger.advance(record.block_id, self.worker, "verified", timings={"verify": result.seconds})
        )
        self.last_verified = time.monotonic()

    # -- 4, 5: ship ----------------------------------------------------------------------------

    def ship(self, wait_for: int, everything: bool = False) -> None:
        """Start transfers for full batches (every verified block with ``everything``), record finished ones."""
        run = self.run
        if self.verified and (everything or len(self.verified) >= run.batch_size):
            self.shipping.extend(
                start_shipping(self.ledger, self.worker, self.backend, run.outbox, self.verified, run.batch_size,
                               run.transfer_retries)
            )  # fmt: skip
            self.verified = []
        due, self.shipping = _due(self.shipping, wait_for, lambda shipment: shipment.future)
        for shipment in due:
            shipped = finish_shipping(self.ledger, self.worker, self.backend, run.outbox, shipment, run.prune_outbox)
            self.held_back.update(i for i in shipment.ids if i not in shipped)
            self.shipped_now.extend(shipped)

    def timings(self) -> dict[str, float]:
        """``model_seconds`` (start until the acquisition's model was decided) and ``coding_seconds``
        (from then until the last block was verified), for the run's summary."""
        ready = self.model_ready if self.model_ready is not None else self.started
        end = self.last_verified if self.last_verified is not None else ready
        return {"model_seconds": round(ready - self.started, 3), "coding_seconds": round(max(end - ready, 0.0), 3)}


def _submit_verification(record: BlockRecord, outbox: Path) -> Any:
    """Start the separate verifying decode of a block encoded by an earlier run (a future)."""
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


def block_failed(ledger: Ledger, worker: str, record: BlockRecord, exc: Exception) -> Exception | None:
    """Mark a block failed with the reason; on a full disk keep it retryable and return the error."""
    logger = get_run_logger()
    if out_of_space(exc):  # not the block's fault: keep it retryable, stop taking more
        logger.error("%s: stopped, disk full: %s; the block stays %s", record.block_id, exc, record.state)
        ledger.release(record.block_id, worker)
        return exc
    logger.error("%s: failed: %s", record.block_id, exc)
    ledger.fail(record.block_id, worker, f"{type(exc).__name__}: {exc}")
    return None


def finished(future: Any) -> bool:
    """Whether a task's future has finished, asked of the future it wraps where there is one.

    ``PrefectFuture.state`` reads the task run from the Prefect API until the run is final: a
    request (and a new API client) per future each time the flow looks, which on a 2-core edge
    node took CPU from the coding. The thread pool's and Dask's futures know locally; only other
    kinds of future are asked through the API.
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
        if len(pending) - index > wait_for or future is None or finished(future):
            due.append(item)
        else:
            still.append(item)
    return due, still
