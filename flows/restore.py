"""The data center flow: restore received blocks into zarr v3 volumes, verified by sha256."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.diskspace import OutOfSpaceError, out_of_space
from tasks.ledger import Ledger, worker_identity
from tasks.restoring import find_received, prepare_targets
from tasks.steps import restore_one


@flow(name="emzip-restore")
def restore_flow(inbox: str, restored: str, ledger: str | None = None, target: str = "volume") -> dict[str, Any]:
    """Restore every complete block in ``inbox`` into ``<restored>/<volume>.zarr`` and mark it restored.

    ``target``: ``volume`` decodes into a zstd zarr v3 volume (TensorStore, neuroglancer);
    ``archive`` keeps the shipped containers as the chunks of an emzip-coded zarr v3 array that
    zarr-python reads with emzip installed (no decoding, the edge's bits per voxel kept).

    The ledger (default ``<restored>/ledger.sqlite``) hands each block to one run (several runs
    on one inbox never restore a block twice), records failures with their reasons, and a failed
    block is retried on the next run. Blocks are restored concurrently through the flow's task
    runner: threads here, Dask workers in ``restore_dask_flow``; a task whose worker dies is run
    again (each block's write is atomic per shard and read back, so a second write is harmless).
    """
    logger = get_run_logger()
    started = time.monotonic()
    with Ledger(ledger or Path(restored) / "ledger.sqlite") as db:
        done = frozenset(r.block_id for r in db.blocks(states=("restored",)))
        scan = find_received(Path(inbox), done)
        received = scan.received
        for path, why in scan.waiting.items():
            logger.info("%s: not restored yet: %s", path, why)
        for path, why in scan.refused.items():
            if db.refuse(path, why):
                logger.error("%s: refused, left in place and not restored: %s", path, why)
        refused_before = db.refusals()
        for item in received:
            if str(item.container_path) in refused_before:
                db.accept(str(item.container_path))
            db.receive(item.block, compressed_sha256=item.valid.compressed_sha256, raw_sha256=item.valid.raw_sha256)
        db.retry_failed(max_attempts=3, to_state="shipped")
        worker = worker_identity()
        by_id = {item.block.block_id: item for item in received}
        rows: list[dict[str, Any]] = []
        claimed = db.claim(worker, ("shipped",), limit=len(by_id), block_ids=list(by_id))
        prepare_targets([by_id[r.block_id] for r in claimed], Path(restored), target)
        restoring = time.monotonic()
        futures = {
            r.block_id: restore_one.submit(r.block_id, inbox, str(by_id[r.block_id].container_path), restored, target)
            for r in claimed
        }
        disk_full: Exception | None = None
        for block_id, future in futures.items():
            try:
                section = future.result()
            except Exception as exc:
                if out_of_space(exc):  # not the block's fault: it stays shipped for the next run
                    logger.error("%s: not restored, disk full: %s", block_id, exc)
                    db.release(block_id, worker)
                    disk_full = exc
                    continue
                logger.error("%s: restore failed: %s", block_id, exc)
                db.fail(block_id, worker, f"{type(exc).__name__}: {exc}")
                rows.append({"block": block_id, "state": "failed", "reason": str(exc)})
                continue
            db.advance(block_id, worker, "restored", release=True, timings={"restore": section["seconds"]})
            rows.append({"block": block_id, "state": "restored", "volume": section["volume_path"]})
        restore_seconds = time.monotonic() - restoring
        progress = db.progress()
    if disk_full is not None:
        raise OutOfSpaceError(f"{restored}: restore stopped, disk full: {disk_full}") from disk_full
    if rows:
        create_table_artifact(rows, key="restored-blocks", description="blocks handled by this restore run")
    if scan.refused:
        create_table_artifact(
            [{"file": path, "reason": why} for path, why in scan.refused.items()],
            key="refused-files",
            description="received files refused by validation (left in place, not restored)",
        )
    create_markdown_artifact(
        f"# emzip restore\n\n{progress['restored']} blocks restored in total, {len(rows)} handled by this run, "
        f"{progress['failed']} failed, {len(scan.waiting)} files waiting, {len(scan.refused)} refused; "
        f"{time.monotonic() - started:.1f} s.",
        key="restore-summary",
    )
    return {
        "handled": len(rows),
        "progress": progress,
        "waiting": len(scan.waiting),
        "refused": scan.refused,
        "rows": rows,
        "restore_seconds": round(restore_seconds, 3),
    }


def dask_task_runner() -> Any:
    """prefect-dask's runner: ``EMZIP_DASK_SCHEDULER`` (an existing cluster's address) or a local
    cluster of ``EMZIP_DASK_WORKERS`` single-threaded worker processes (default: one per core).
    """
    from prefect_dask import DaskTaskRunner

    address = os.environ.get("EMZIP_DASK_SCHEDULER")
    if address:
        return DaskTaskRunner(address=address)
    workers = int(os.environ.get("EMZIP_DASK_WORKERS") or os.cpu_count() or 1)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    )


#: The restore flow with its blocks decoded on Dask (a local cluster sized to the node, or the
#: cluster at ``EMZIP_DASK_SCHEDULER``); the cluster is chosen when this module is imported.
restore_dask_flow = restore_flow.with_options(name="emzip-restore-dask", task_runner=dask_task_runner())
