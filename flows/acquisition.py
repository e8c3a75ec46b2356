"""The edge flow: scan an acquisition, compress and verify its ready blocks, ship them.

Composition only; the work is in ``tasks``, the order of it in ``flows.edge_scheduler``. Each
block walks discovered -> encoded -> verified -> shipped in the ledger, so a run that is killed
and started again picks up every block where it stopped: encoded blocks are verified (not
re-encoded), verified blocks are shipped as the batch they were assigned (same submission id,
never a second copy). A block that fails is marked failed with the reason and the flow goes on
with the others. Blocks are coded by as many workers as the flow's task runner has
(``workers``), all with the acquisition's model decided on the first block.
"""

from __future__ import annotations

import time
from base64 import b64encode
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from codec.settings import Settings
from flows.dask_workers import runs_on_dask, start_task_runner, task_runner_width
from flows.edge_scheduler import EDGE_STATES, EdgeRun, EdgeScheduler
from flows.parameters import CodecParameters, TransferConfig, codec_overrides, transfer_dict
from flows.progress import ProgressBar
from tasks.edge.pruning import prune_raw_files
from tasks.edge.readiness import DEFAULT_MARKER, scan_volume
from tasks.edge.shipping import (
    backend_from_config,
    prune_shipped_outbox,
)
from tasks.figures import block_bitrate_png
from tasks.source.grid import BlockRef, choose_block_shape
from tasks.source.revisions import SourceChangedError, find_revisions
from tasks.source.volumes import Volume, VolumeSource, open_volume, resolve_source
from tasks.store.diskspace import OutOfSpaceError
from tasks.store.ledger import BlockRecord, Ledger, worker_identity
from tasks.store.provenance import load_record

#: Claims (attempts) after which a failed block is no longer retried by itself; ``emzip retry``
#: puts it back once its cause is fixed.
MAX_EDGE_ATTEMPTS = 3
#: What the edge does with a coded block whose raw data changed: code it again as a new version, or refuse the run.
CHANGED_SOURCE_ACTIONS = ("recode", "refuse")


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
    workers: int | None = None,
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

    ``workers``: blocks coded at once (``flows.edge_scheduler``); default one per worker thread of
    the flow's task runner (run it with ``flows.dask_workers.dask_task_runner``: a Dask cluster, local
    or at an address, as ``emzip run --workers/--cluster`` does). The acquisition's model is
    decided on the first block and reaches every worker with the blocks it codes.
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
    workers_start_seconds = start_task_runner()  # a Dask cluster's workers start before the first block
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
        run = EdgeRun(
            report.volume,
            grid,
            source.as_json(),
            settings,
            outbox_path,
            width=max(1, workers or task_runner_width()),
            queued=2 if runs_on_dask() else 1,  # the next task waits at each worker
            batch_size=batch_size,
            transfer_retries=transfer_retries,
            prune_outbox=prune_outbox,
            max_blocks=max_blocks,
        )
        todo = len(ledger_db.pending(source.name))
        progress = ProgressBar(key=f"progress-{_key(source.name)}", description=f"{source.name}: blocks")
        scheduler = EdgeScheduler(ledger_db, worker, run, backend, progress, todo)
        scheduler.run_all()
        disk_full, done, shipped_now = scheduler.disk_full, scheduler.taken, scheduler.shipped_now
        if disk_full is not None:
            raise OutOfSpaceError(f"{source.name}: run stopped, disk full: {disk_full}") from disk_full
        if scheduler.outbox_failed is not None:
            failed = scheduler.outbox_failed
            raise OSError(failed.errno, f"{source.name}: run stopped: {failed.strerror}") from failed
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
        this_run = {"coded": done, "shipped": len(shipped_now), "recoded": recoded, "raw_bytes": scheduler.coded_bytes}
        summary = _summarise(
            ledger_db, source.name, report.volume.shape, len(report.waiting), time.monotonic() - started, this_run
        )
        timings = {**scheduler.timings(), "workers_start_seconds": round(workers_start_seconds, 3)}
        return {**summary, "grid": list(grid), "workers": run.width, "workers_retired": scheduler.retired, **timings}
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
