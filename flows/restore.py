"""The data center flow: restore received blocks into zarr v3 volumes, verified by sha256."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.diskspace import OutOfSpaceError, out_of_space
from tasks.ledger import Ledger, worker_identity
from tasks.restoring import find_received
from tasks.steps import restore_one


@flow(name="emzip-restore")
def restore_flow(inbox: str, restored: str, ledger: str | None = None, target: str = "volume") -> dict[str, Any]:
    """Restore every complete block in ``inbox`` into ``<restored>/<volume>.zarr`` and mark it restored.

    ``target``: ``volume`` decodes into a zstd zarr v3 volume (TensorStore, neuroglancer);
    ``archive`` keeps the shipped containers as the chunks of an emzip-coded zarr v3 array that
    zarr-python reads with emzip installed (no decoding, the edge's bits per voxel kept).

    The ledger (default ``<restored>/ledger.sqlite``) keeps restored blocks from being written
    twice and records failures with their reasons; a failed block is retried on the next run.
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
        disk_full: Exception | None = None
        for record in claimed:
            item = by_id[record.block_id]
            try:
                section = restore_one(record.block_id, item, restored, target)
            except Exception as exc:
                if out_of_space(exc):  # not the block's fault: it and the rest stay shipped for the next run
                    logger.error("%s: stopped, disk full: %s", record.block_id, exc)
                    db.release_all(worker)
                    disk_full = exc
                    break
                logger.error("%s: restore failed: %s", record.block_id, exc)
                db.fail(record.block_id, worker, f"{type(exc).__name__}: {exc}")
                rows.append({"block": record.block_id, "state": "failed", "reason": str(exc)})
                continue
            db.advance(record.block_id, worker, "restored", release=True, timings={"restore": section["seconds"]})
            rows.append({"block": record.block_id, "state": "restored", "volume": section["volume_path"]})
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
    }
