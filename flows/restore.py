"""The data center flow: restore received blocks into zarr v3 volumes, verified by sha256."""

from __future__ import annotations

import heapq
import math
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.dask_workers import (
    dask_task_runner,
    local_workers,
    start_task_runner,
)
from flows.parameters import RedeliveryConfig, transfer_dict
from flows.steps import DISK_FULL, FAILED, RESTORED, pyramid_chunks, restore_blocks
from tasks.datacenter.completeness import datacenter_gaps
from tasks.datacenter.omezarr import set_completeness
from tasks.datacenter.pyramid import footprint_key, whole_from
from tasks.datacenter.pyramid_pass import Chunk, carry_up
from tasks.datacenter.redelivery import REDELIVERIES, redeliver
from tasks.datacenter.restoring import (
    DAMAGED_AFTER_SECONDS,
    InboxScan,
    ReceivedBlock,
    Restored,
    find_received,
    prepare_targets,
)
from tasks.datacenter.targets import TargetError, read_target
from tasks.edge.shipping import backend_from_config
from tasks.store.diskspace import OutOfSpaceError, out_of_space
from tasks.store.ledger import Ledger, worker_identity
from tasks.store.names import UnsafeInputError, inside


@flow(name="emzip-restore")
def restore_flow(
    inbox: str,
    restored: str,
    ledger: str | None = None,
    target: str = "volume",
    blocks_per_task: int | None = None,
    damaged_after: float = DAMAGED_AFTER_SECONDS,
    pyramid: bool = True,
    redelivery: RedeliveryConfig | None = None,
) -> dict[str, Any]:
    """Restore every complete block in ``inbox`` into ``<restored>/<volume>.zarr`` and mark it restored.

    Each volume is an OME-Zarr 0.5 image (``tasks.datacenter.omezarr``) whose level ``0`` is, by ``target``:
    ``volume``, a zstd zarr v3 array (TensorStore, neuroglancer); ``archive``, the shipped
    containers as the chunks of an emzip-coded zarr v3 array that zarr-python reads with emzip
    installed (no decoding, the edge's bits per voxel kept). After the blocks, the chunks of the
    pyramid's levels above them are recomputed (``tasks.datacenter.pyramid_pass``) on the same task runner.

    The ledger (default ``<restored>/ledger.sqlite``) hands each block to one run (several runs
    on one inbox never restore a block twice), records failures with their reasons, and a failed
    block is retried on the next run. Blocks are restored concurrently through the flow's task
    runner: threads here, Dask workers in ``restore_dask_flow``; a task whose worker dies is run
    again (each block's write is atomic per shard and read back, so a second write is harmless).
    Each task restores ``blocks_per_task`` blocks (default ``default_blocks_per_task``): a task
    run's fixed cost is paid once for several blocks. ``pyramid=False`` defers the pyramid: what
    the blocks touched stays pending in the ledger and the next run with ``pyramid=True`` brings
    it up to date (for example a fast restore now, pyramids at night).

    ``redelivery`` (``{"outbox": EDGE_OUTBOX, "transfer": BACKEND_CONFIG}``, the edge's backend
    config whose destination is this inbox) lets the run ask for a container again when it
    disagrees with its record (``tasks.datacenter.redelivery``, up to ``REDELIVERIES`` times); one still
    damaged after that is refused at once, loudly. Without it a damaged container waits
    ``damaged_after`` seconds (a transfer may still be writing it), then is refused. Each volume's
    image says in its attributes whether it is complete and which blocks are missing; the
    summary's ``incomplete`` lists them with the reasons.
    """
    if blocks_per_task is not None and blocks_per_task < 1:
        raise ValueError(f"blocks_per_task must be at least 1, got {blocks_per_task}")
    logger = get_run_logger()
    started = time.monotonic()
    with Ledger(ledger or Path(restored) / "ledger.sqlite") as db:
        done = {r.block_id: (r.version, r.raw_sha256) for r in db.blocks(states=("restored",))}
        scan = find_received(Path(inbox), done, damaged_after)
        if redelivery is not None:
            scan = _redeliver_damaged(scan, Path(inbox), redelivery, done, damaged_after)
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
            db.receive(
                item.block,
                item.valid.version,
                compressed_sha256=item.valid.compressed_sha256,
                raw_sha256=item.valid.raw_sha256,
            )
        db.retry_failed(max_attempts=3, to_state="shipped")
        worker = worker_identity()
        by_id = {item.block.block_id: item for item in received}
        rows: list[dict[str, Any]] = []
        claimed = db.claim(worker, ("shipped",), limit=len(by_id), block_ids=list(by_id))
        new_levels: dict[str, list[int]] = {}
        refused_blocks = prepare_targets([by_id[r.block_id] for r in claimed], Path(restored), target, new_levels)
        for block_id, why in refused_blocks.items():  # refused alone: the other blocks go on
            _record_outcome(db, worker, block_id, {"state": FAILED, "reason": f"refused: {why}"}, rows)
        claimed = [r for r in claimed if r.block_id not in refused_blocks]
        _mark_pyramids(db, [by_id[r.block_id] for r in claimed], new_levels)
        runner_seconds = start_task_runner() if claimed else 0.0
        restoring = time.monotonic()
        size = blocks_per_task or default_blocks_per_task(len(claimed))
        tasks = []
        for chunk in plan_tasks({r.block_id: by_id[r.block_id].block.voxels for r in claimed}, size):
            pairs = [(block_id, str(by_id[block_id].container_path)) for block_id in chunk]
            label = chunk[0] if len(chunk) == 1 else f"{chunk[0]} +{len(chunk) - 1}"
            tasks.append((chunk, restore_blocks.submit(label, pairs, inbox, restored, target)))
        disk_full: str | None = None
        for chunk, future in tasks:
            try:
                outcomes = future.result()
            except Exception as exc:  # the whole task failed (its worker lost for good): every block
                state = DISK_FULL if out_of_space(exc) else FAILED
                outcomes = {block_id: {"state": state, "reason": f"{type(exc).__name__}: {exc}"} for block_id in chunk}
            for block_id in chunk:
                outcome = outcomes.get(block_id) or {"state": FAILED, "reason": "its restore task did not report it"}
                disk_full = _record_outcome(db, worker, block_id, outcome, rows) or disk_full
        restore_seconds = time.monotonic() - restoring
        pyramid_started = time.monotonic()
        unfinished: dict[str, str] = {}
        if disk_full is None and pyramid:
            try:
                unfinished = carry_up(db, lambda volume: inside(Path(restored), f"{volume}.zarr"), _run_level)
            except Exception as exc:
                if not out_of_space(exc):
                    raise
                disk_full = f"pyramid: {exc}"
        for volume, why in unfinished.items():
            logger.error("%s: pyramid not brought up to date (the next run tries again): %s", volume, why)
        pyramid_seconds = time.monotonic() - pyramid_started
        progress = db.progress()
        touched = {item.block.volume for item in received} | {Path(p).parent.name for p in scan.refused}
        incomplete = _mark_completeness(db, Path(restored), touched) if disk_full is None else {}
    if disk_full is not None:
        raise OutOfSpaceError(f"{restored}: restore stopped, disk full: {disk_full}")
    if rows:
        create_table_artifact(rows, key="restored-blocks", description="blocks handled by this restore run")
    if scan.refused:
        create_table_artifact(
            [{"file": path, "reason": why} for path, why in scan.refused.items()],
            key="refused-files",
            description="received files refused by validation (left in place, not restored)",
        )
    damaged = sum(1 for why in scan.refused.values() if ": damaged: " in why)
    create_markdown_artifact(
        f"# emzip restore\n\n{progress['restored']} blocks restored in total, {len(rows)} handled by this run, "
        f"{progress['failed']} failed, {len(scan.waiting)} files waiting, {len(scan.refused)} refused "
        f"({damaged} damaged); {time.monotonic() - started:.1f} s ({pyramid_seconds:.1f} s of it for pyramids"
        f"{', ' + str(len(unfinished)) + ' not finished' if unfinished else ''})."
        + "".join(
            f"\n\n**{volume} is incomplete**: {len(gaps)} blocks missing: "
            + ", ".join(f"`{block_id}` ({why})" for block_id, why in sorted(gaps.items())[:20])
            for volume, gaps in incomplete.items()
        ),
        key="restore-summary",
    )
    return {
        "handled": len(rows),
        "progress": progress,
        "waiting": len(scan.waiting),
        "refused": scan.refused,
        "damaged": damaged,
        "rows": rows,
        "restore_seconds": round(restore_seconds, 3),
        "pyramid_seconds": round(pyramid_seconds, 3),
        "pyramids_unfinished": unfinished,
        "runner_start_seconds": round(runner_seconds, 3),
        "incomplete": incomplete,
        "superseded": len(scan.superseded),
    }


def _redeliver_damaged(
    scan: InboxScan, inbox: Path, redelivery: RedeliveryConfig, done: dict[str, Restored], damaged_after: float
) -> InboxScan:
    """Ask the edge's backend for every container that disagrees with its record, then look again.

    Up to ``REDELIVERIES`` rounds; what still disagrees after them (or could not be delivered)
    is refused now, with why, instead of waiting ``damaged_after`` seconds.
    """
    logger = get_run_logger()
    backend = backend_from_config(transfer_dict(redelivery.transfer))
    outbox = Path(redelivery.outbox)
    failures: dict[str, str] = {}
    for attempt in range(1, REDELIVERIES + 1):
        if not scan.mismatched:
            return scan
        for path in scan.mismatched:
            why = scan.waiting.get(path) or scan.refused.get(path)
            logger.warning("%s: %s; asking %s for it again (%d of %d)", path, why, backend.name, attempt, REDELIVERIES)
        failures = redeliver(backend, inbox, outbox, scan.mismatched)
        scan = find_received(inbox, done, damaged_after)
        if failures:
            break
    for path in scan.mismatched:
        why = scan.waiting.pop(path, None) or scan.refused.get(path, "")
        cause = failures.get(path, f"still differs after {REDELIVERIES} deliveries")
        scan.refused[path] = f"{path}: damaged: {why.removeprefix(f'{path}: damaged: ')}; delivered again: {cause}"
    return scan


def _mark_completeness(db: Ledger, restored: Path, volumes: set[str]) -> dict[str, dict[str, str]]:
    """Write each volume's completeness into its image's attributes; returns volume -> missing block -> why."""
    logger = get_run_logger()
    incomplete: dict[str, dict[str, str]] = {}
    for volume in sorted(volumes):
        try:
            target = inside(restored, f"{volume}.zarr")
            info = read_target(target)
        except (UnsafeInputError, TargetError):
            continue
        if info is None:
            continue
        gaps = datacenter_gaps(db, volume, info.shape, info.grid)  # type: ignore[arg-type]
        set_completeness(target, list(gaps))
        if gaps:
            incomplete[volume] = gaps
            logger.warning(
                "%s: %d of its blocks are not restored (the image's attributes list them): %s",
                volume,
                len(gaps),
                "; ".join(f"{block_id}: {why}" for block_id, why in sorted(gaps.items())[:10]),
            )
    return incomplete


def _mark_pyramids(db: Ledger, items: list[ReceivedBlock], new_levels: dict[str, list[int]]) -> None:
    """Leave each block's footprint (and each volume's new levels) pending before anything is written."""
    footprints: dict[str, list[str]] = {}
    for item in items:
        footprints.setdefault(item.block.volume, []).append(footprint_key(item.block.bounds))
    for volume, levels in new_levels.items():
        footprints.setdefault(volume, []).append(whole_from(min(levels)))
    for volume, keys in footprints.items():
        db.mark_pyramid(volume, keys)


def _run_level(image: Path, level: int, groups: list[list[Chunk]]) -> None:
    """One pyramid level's chunk groups as tasks on the flow's task runner; waits for them all."""
    name = image.stem
    futures = [
        pyramid_chunks.submit(f"{name} level {level} {i + 1}/{len(groups)}", str(image), level, group)
        for i, group in enumerate(groups)
    ]
    for future in futures:
        future.result()


def _record_outcome(
    db: Ledger, worker: str, block_id: str, outcome: dict[str, Any], rows: list[dict[str, Any]]
) -> str | None:
    """Move one block's ledger entry by what its restore task reported; the reason if the disk was full.

    Restored: advanced. Failed: marked failed with the reason (retried by a later run). Disk full,
    or not tried after it: not the block's fault, released and left shipped for the next run.
    """
    if outcome["state"] == RESTORED:
        section = outcome["section"]
        db.advance(block_id, worker, "restored", release=True, timings={"restore": section["seconds"]})
        if section.get("pyramid_level_one"):  # the worker wrote level 1 from the block: the pass starts at 2
            block = db.get(block_id).block
            db.replace_pyramid(block.volume, footprint_key(block.bounds), footprint_key(block.bounds, from_level=2))
        rows.append({"block": block_id, "state": "restored", "volume": section["volume_path"]})
        return None
    logger = get_run_logger()
    if outcome["state"] == FAILED:
        logger.error("%s: restore failed: %s", block_id, outcome["reason"])
        db.fail(block_id, worker, outcome["reason"])
        rows.append({"block": block_id, "state": "failed", "reason": outcome["reason"]})
        return None
    logger.error("%s: not restored, %s: %s", block_id, outcome["state"], outcome["reason"])
    db.release(block_id, worker)
    return str(outcome["reason"])


#: The most blocks one restore task holds (what a killed worker's task does again).
MAX_BLOCKS_PER_TASK = 8


def default_blocks_per_task(blocks: int, workers: int | None = None) -> int:
    """Blocks per restore task: the blocks shared out evenly, at most ``MAX_BLOCKS_PER_TASK``.

    A task run costs Prefect bookkeeping, in the worker (about 0.05 s with ``flows.dask_preload``,
    0.1-0.2 s before it) and on the server (about 0.06 s), against about 0.4 s for a 64x128x128
    block's restore: on a 2-core node, tasks of 2, 4 and 8 blocks scaled 1.6x, 1.6x and 1.73x from
    one worker to two (``bench.restore_dask``, before the preload's settings and TLS warm-up). A
    short run therefore gets one task per worker; a long one tasks of 8, whose number keeps the
    workers evenly loaded (``plan_tasks`` gives them equal work) and whose size keeps a lost
    worker's redo short. ``workers`` defaults to ``EMZIP_DASK_WORKERS`` or this node's
    cores (set the variable when restoring on a cluster elsewhere).
    """
    count = workers or local_workers()
    return max(1, min(MAX_BLOCKS_PER_TASK, math.ceil(blocks / count)))


def plan_tasks(voxels: dict[str, int], per_task: int) -> list[list[str]]:
    """Deal blocks (id -> voxels) into ``ceil(blocks / per_task)`` tasks of equal work, at most ``per_task`` each.

    Largest first, each block to the task with the fewest voxels that still has room; each task's
    blocks in id order. A volume's last blocks along each axis are partial (26 of 32 slices in
    the FlyEM bench): cut into runs of consecutive ids, the task holding them finished 0.2 s
    before the others and left one of two workers idle at the end of the run.
    """
    if per_task < 1:
        raise ValueError(f"blocks per task must be at least 1, got {per_task}")
    count = math.ceil(len(voxels) / per_task)
    tasks: list[list[str]] = [[] for _ in range(count)]
    with_room = [(0, i) for i in range(count)]  # (voxels so far, task): a heap, lightest first
    for block_id in sorted(voxels, key=lambda b: (-voxels[b], b)):
        work, lightest = heapq.heappop(with_room)
        tasks[lightest].append(block_id)
        if len(tasks[lightest]) < per_task:
            heapq.heappush(with_room, (work + voxels[block_id], lightest))
    return [sorted(task) for task in tasks]


#: The restore flow with its blocks decoded on Dask (a local cluster sized to the node, or the
#: cluster at ``EMZIP_DASK_SCHEDULER``); the cluster is chosen when this module is imported.
restore_dask_flow = restore_flow.with_options(name="emzip-restore-dask", task_runner=dask_task_runner())
