"""Prefect tasks: thin wrappers that give the plain functions retries, names and logs.

Retries belong to reading and transferring, on transient errors only (``transient_only``); a
failed verification is never retried into a ship. Every log line names the block. Heavy values
(arrays, model weights) pass between tasks in-process and are never cached or persisted
(``NO_CACHE``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.tasks import exponential_backoff

from codec.settings import Settings
from tasks.datacenter.destination import RestoreError
from tasks.datacenter.pyramid_pass import recompute_chunks
from tasks.datacenter.restoring import load_received, restore_block
from tasks.edge.encoding import EncodedBlock, encode_to_outbox
from tasks.edge.verification import VerifyResult, verify_container
from tasks.source.grid import BlockRef
from tasks.source.revisions import raw_stamp
from tasks.source.volumes import VolumeError, VolumeSource, open_volume
from tasks.store.diskspace import out_of_space
from tasks.transfer import TransferBackend, TransferBatch, TransferReport, TransientTransferError

if TYPE_CHECKING:
    import torch

GPU_LIMIT_PREFIX = "emzip-gpu"

__all__ = [
    "BlockData",
    "encode_block",
    "gpu_limit_name",
    "pyramid_chunks",
    "read_block",
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


class BlockData(NamedTuple):
    """One block's voxels as read, the seconds the read took (its provenance records them), and the
    stamp of its raw files taken before the read (``tasks.source.revisions.raw_stamp``; None if not inspectable)."""

    voxels: np.ndarray
    seconds: float
    stamp: str | None = None


@task(name="read-block", task_run_name="read {block_id}", **_retry_transient(retries=3, backoff_factor=2))
def read_block(source: dict[str, Any], block_id: str, block: dict[str, Any]) -> BlockData:
    """Read one block's voxels through TensorStore (fresh metadata)."""
    started = time.monotonic()
    ref = BlockRef.from_json(block)
    volume = open_volume(VolumeSource.from_json(source))
    stamp = raw_stamp(volume, ref)  # before the read: a file rewritten during it shows up next run
    data = volume.read(ref.bounds)
    get_run_logger().info("%s: read %s %s", block_id, data.dtype, data.shape)
    return BlockData(data, time.monotonic() - started, stamp)


@task(name="encode-block", task_run_name="encode {block_id}", cache_policy=NO_CACHE)
def encode_block(
    block_id: str,
    block: dict[str, Any],
    data: np.ndarray,
    settings: Settings,
    outbox: str,
    warm_start: dict[str, torch.Tensor] | None = None,
    version: int = 1,
) -> tuple[EncodedBlock, dict[str, torch.Tensor] | None]:
    """Train and encode on the best device; one encode per GPU at a time (global concurrency limit)."""
    import torch  # training: the restore side of these tasks never loads it

    logger = get_run_logger()
    if settings.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(settings.device)
    limit = gpu_limit_name(device)
    logger.info("%s: training and encoding on %s", block_id, device)
    if limit is None:
        encoded, state = encode_to_outbox(BlockRef.from_json(block), data, settings, Path(outbox), warm_start, version)
    else:
        with concurrency(limit, occupy=1, strict=False):
            encoded, state = encode_to_outbox(
                BlockRef.from_json(block), data, settings, Path(outbox), warm_start, version
            )
    logger.info(
        "%s: %s %.3f bits/voxel (%s) in %.1f s",
        block_id,
        encoded.codec,
        encoded.bits_per_voxel,
        encoded.reason,
        encoded.seconds,
    )
    return encoded, state


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
