"""Prefect tasks: thin wrappers that give the plain functions retries, names and logs.

Retries belong to reading and transferring, on transient errors only (``transient_only``); a
failed verification is never retried into a ship. Every log line names the block. Voxels never
pass between the flow and its tasks (a coding task reads its blocks itself); nothing is cached or
persisted (``NO_CACHE``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.tasks import exponential_backoff

from codec.settings import Settings
from tasks.datacenter.destination import RestoreError
from tasks.datacenter.pyramid_pass import recompute_chunks
from tasks.datacenter.restoring import load_received, restore_block
from tasks.edge.coding import BlockJob, code_block
from tasks.edge.encoding import EncodedBlock, encode_to_outbox
from tasks.edge.verification import VerifyResult, verify_container
from tasks.source.grid import BlockRef
from tasks.source.volumes import VolumeError
from tasks.store.diskspace import out_of_space
from tasks.transfer import TransferBackend, TransferBatch, TransferReport, TransientTransferError

if TYPE_CHECKING:
    import torch

    from codec.shared import SharedModel

GPU_LIMIT_PREFIX = "emzip-gpu"

__all__ = [
    "OUTBOX_FAILED",
    "code_blocks_task",
    "dask_worker_address",
    "encode_block",
    "gpu_limit_name",
    "pyramid_chunks",
    "restore_blocks",
    "ship_batch",
    "transient_only",
    "verify_block",
]


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transfers and reads only when the failure may pass."""
    try:
        state.result()
    except TransientTransferError:
        return True
    except VolumeError as exc:
        return isinstance(exc.__cause__, OSError | TimeoutError)
    except (TimeoutError, ConnectionError):
        return True
    except Exception:
        return False
    return False


def gpu_limit_name(device: torch.device) -> str | None:
    """The global concurrency limit guarding a CUDA device (``emzip-gpu-<index>``); None on CPU."""
    if device.type != "cuda":
        return None
    return f"{GPU_LIMIT_PREFIX}-{device.index or 0}"


def _retry_transient(retries: int, backoff_factor: float) -> dict[str, Any]:
    """Task options: exponential backoff with jitter, on transient errors only, never cached."""
    return {
        "retries": retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=backoff_factor),
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": transient_only,
        "cache_policy": NO_CACHE,
    }


class _GpuSlot:
    """The codec's progress callback that holds a GPU's concurrency slot while a model trains, and only then.

    ``train`` at step 0 takes the slot (``emzip-gpu-<n>``, a Prefect global concurrency limit),
    ``train`` at its last step gives it back: the engine codes on the CPU, and a block coded
    with the acquisition's model does not train at all, so it never holds the GPU.
    """

    def __init__(self, limit: str | None) -> None:
        self.limit = limit
        self._held: contextlib.ExitStack | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != "train" or self.limit is None:
            return
        if done == 0 and self._held is None and total > 0:
            self._held = contextlib.ExitStack()
            self._held.enter_context(concurrency(self.limit, occupy=1, strict=False))
        elif done >= total:
            self.release()

    def release(self) -> None:
        """Give the slot back if it is held (also after a failed encode)."""
        if self._held is not None:
            held, self._held = self._held, None
            held.close()


def _device(settings: Settings) -> torch.device:
    import torch  # training: the restore side of these tasks never loads it

    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(settings.device)


@task(name="encode-block", task_run_name="encode {block_id}", cache_policy=NO_CACHE)
def encode_block(
    block_id: str,
    block: dict[str, Any],
    data: np.ndarray,
    settings: Settings,
    outbox: str,
    shared: SharedModel | None = None,
    version: int = 1,
) -> tuple[EncodedBlock, SharedModel | None]:
    """Encode one block into the outbox (the flight check's single block; the edge uses ``code_block_task``)."""
    slot = _GpuSlot(gpu_limit_name(_device(settings)))
    try:
        encoded, model = encode_to_outbox(
            BlockRef.from_json(block), data, settings, Path(outbox), shared, version, slot
        )
    finally:
        slot.release()
    get_run_logger().info(
        "%s: %s %.3f bits/voxel (%s) in %.1f s", block_id, encoded.codec, encoded.bits_per_voxel, encoded.reason,
        encoded.seconds,
    )  # fmt: skip
    return encoded, model


#: Attempts at one block's job in a worker when reading it fails transiently (a flaky mount).
CODE_ATTEMPTS = 3


@task(name="code-blocks", task_run_name="code {label}", cache_policy=NO_CACHE)
def code_blocks_task(
    label: str, jobs: list[BlockJob], shared: SharedModel | None, alone: bool = False
) -> list[dict[str, Any]]:
    """Several blocks' whole edge job, one after another, on whichever worker runs the task.

    One task holds several blocks because a Prefect task run costs about 75 ms of wall time and
    API work per run (``bench.scaleout``, the coordinator), a quarter of a 2 MB block's coding.
    Each block is coded on its own (``tasks.edge.coding.code_block``; a transient read error is
    tried again, ``CODE_ATTEMPTS`` in all): one that fails is reported ``failed`` with the reason
    and the others go on; a full disk or a failed outbox write (``OUTBOX_FAILED``: this worker's
    mount, not the block) stops the task, its other blocks ``not-tried``. A GPU slot is held only
    while a model trains (``_GpuSlot``). Returns, per job, ``{"state", "coded" or "reason" and
    "worker"}`` (``worker``: the Dask worker's address, None in the flow's threads). ``alone``: no
    other block is with a worker (the one deciding the acquisition's model): its training uses
    every core this process may run on, not the one thread a Dask worker's torch starts with.
    """
    logger = get_run_logger()
    outcomes: list[dict[str, Any]] = []
    stopped = ""
    worker = dask_worker_address()
    for job in jobs:
        block_id = BlockRef.from_json(job.block).block_id
        if stopped:
            outcomes.append({"state": NOT_TRIED, "reason": f"an earlier block of this task found {stopped}"})
            continue
        device = _device(job.settings)
        for attempt in range(1, CODE_ATTEMPTS + 1):
            slot = _GpuSlot(gpu_limit_name(device))
            try:
                with _training_threads(alone):
                    coded = code_block(job, shared, slot)
            except Exception as exc:
                if attempt < CODE_ATTEMPTS and _transient(exc):
                    logger.warning("%s: attempt %d failed, trying again: %s", block_id, attempt, exc)
                    time.sleep(2.0**attempt)
                    continue
                state = _failure_state(exc, job.outbox)
                stopped = {DISK_FULL: "the disk full", OUTBOX_FAILED: "the outbox unwritable"}.get(state, "")
                logger.error("%s: not coded (%s) on %s: %s", block_id, state, worker or "this process", exc)
                reason, code = f"{type(exc).__name__}: {exc}", getattr(exc, "errno", None)
                outcomes.append({"state": state, "reason": reason, "errno": code, "worker": worker})
                break
            finally:
                slot.release()
            encoded = coded.encoded
            logger.info(
                "%s: %s %.3f bits/voxel (%s) in %.2f s on %s; verified by %s in %.2f s",
                block_id, encoded.codec, encoded.bits_per_voxel, encoded.reason, encoded.seconds, device,
                coded.verification.process, coded.verification.seconds,
            )  # fmt: skip
            outcomes.append({"state": "coded", "coded": coded})
            shared = coded.shared or shared
            break
    return outcomes


@contextlib.contextmanager
def _training_threads(alone: bool) -> Iterator[None]:
    """Torch on every core this process may use while ``alone``; its thread count as it was after."""
    if not alone:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _failure_state(exc: BaseException, outbox: str) -> str:
    """How a block's job failed: ``DISK_FULL``, ``OUTBOX_FAILED`` (a write into the outbox failed
    otherwise: this worker's mount or disk, not the block) or ``FAILED`` (the block's own fault)."""
    if out_of_space(exc):
        return DISK_FULL
    if isinstance(exc, OSError) and exc.filename and _under(str(exc.filename), outbox):
        return OUTBOX_FAILED
    return FAILED


def _under(path: str, folder: str) -> bool:
    """Whether ``path`` lies in ``folder``, by name alone (a broken mount is not asked)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


def dask_worker_address() -> str | None:
    """The address of the Dask worker this runs on; None outside one (the flow's threads)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


def _transient(exc: BaseException) -> bool:
    """A read that may pass when tried again (``transient_only``'s rule, for an exception in hand)."""
    if isinstance(exc, VolumeError):
        return isinstance(exc.__cause__, OSError | TimeoutError)
    return isinstance(exc, TimeoutError | ConnectionError)


@task(name="worker-warm-up", task_run_name="warm up a worker", cache_policy=NO_CACHE)
def warm_up_task() -> None:
    """Nothing: run once in each Dask worker process (``flows.dask_preload.warm_worker``), so that
    Prefect's first task run in a process (about 6 s here) is not paid by a block."""


@task(name="verify-block", task_run_name="verify {block_id}", cache_policy=NO_CACHE)
def verify_block(
    block_id: str, container: str, raw_sha256: str, compressed_sha256: str, shape: list[int], dtype: str
) -> VerifyResult:
    """Decode the outbox container in a separate process and compare (raises VerificationError)."""
    result = verify_container(
        Path(container), raw_sha256=raw_sha256, compressed_sha256=compressed_sha256, shape=tuple(shape), dtype=dtype
    )
    get_run_logger().info("%s: round trip verified in a separate process (%s)", block_id, result.process)
    return result


@task(name="ship-batch", task_run_name="ship {batch.batch_id}", **_retry_transient(retries=4, backoff_factor=5))
def ship_batch(backend: TransferBackend, batch: TransferBatch, submission_id: str) -> TransferReport:
    """Transfer one batch and wait for its verified arrival (raises a TransferError)."""
    logger = get_run_logger()
    blocks = sorted({f.block_id for f in batch.files if f.block_id})
    logger.info(
        "%s: shipping %d files (%d bytes) to %s",
        ", ".join(blocks),
        len(batch.files),
        batch.total_bytes,
        backend.destination,
    )
    report = backend.transfer(batch, submission_id)
    logger.info("%s: transfer %s %s", ", ".join(blocks), report.task_id or report.submission_id, report.status)
    return report


#: What a restore task reports for each of its blocks (``restore_blocks``).
RESTORED, FAILED, DISK_FULL, NOT_TRIED = "restored", "failed", "disk-full", "not-tried"
#: A coding task's block whose write into the outbox failed (not for lack of space).
OUTBOX_FAILED = "outbox-failed"


@task(name="restore-blocks", task_run_name="restore {label}", cache_policy=NO_CACHE)
def restore_blocks(
    label: str, blocks: list[tuple[str, str]], inbox: str, restored_root: str, target: str = "volume"
) -> dict[str, dict[str, Any]]:
    """Restore several received blocks (``(block_id, container)`` pairs) one after another.

    One task holds several blocks because a Prefect task run has a fixed cost (its run and state
    records on the API, its logs) that a half-second decode would otherwise pay again and again;
    ``bench.restore_dask`` measures it. Each block is validated from its own files (only file names
    cross to a possibly remote Dask worker), restored and sha256-checked on its own: a block that
    fails is reported ``failed`` with the reason and the others go on; a full disk stops the task
    and leaves its remaining blocks ``not-tried``. Returns block id -> ``{"state", "section" or
    "reason"}``; the flow, not the worker, moves the ledger.
    """
    logger = get_run_logger()
    outcomes: dict[str, dict[str, Any]] = {}
    disk_full = False
    for block_id, container in blocks:
        if disk_full:
            outcomes[block_id] = {"state": NOT_TRIED, "reason": "an earlier block of this task found the disk full"}
            continue
        try:
            item = load_received(Path(inbox), Path(container))
            if item is None or item.block.block_id != block_id:
                raise RestoreError(f"{block_id}: {container} no longer holds this block")
            section = restore_block(item, Path(restored_root), target_kind=target)
        except Exception as exc:
            disk_full = out_of_space(exc)
            state = DISK_FULL if disk_full else FAILED
            logger.error("%s: not restored (%s): %s", block_id, state, exc)
            outcomes[block_id] = {"state": state, "reason": f"{type(exc).__name__}: {exc}"}
            continue
        logger.info("%s: restored into %s, sha256 verified", block_id, section["volume_path"])
        outcomes[block_id] = {"state": RESTORED, "section": section}
    return outcomes


@task(name="pyramid-chunks", task_run_name="pyramid {label}", cache_policy=NO_CACHE)
def pyramid_chunks(label: str, image: str, level: int, chunks: list[tuple[int, int, int]]) -> int:
    """Recompute ``chunks`` of one pyramid level from the level below (``tasks.datacenter.pyramid_pass``)."""
    written = recompute_chunks(Path(image), level, [(c[0], c[1], c[2]) for c in chunks])
    get_run_logger().info("%s: level %d, %d chunks recomputed", label, level, written)
    return written
