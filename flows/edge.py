"""The edge node's entry flow: scan every acquisition under a root folder (or one of them).

This is what the deployments run on a schedule and on ``emzip watch`` events: each sub-folder
of ``acquisition_root`` is one volume (any layout ``tasks.source.volumes`` reads) and is handed to the
acquisition flow as a subflow, one after another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.acquisition import acquisition_flow
from flows.parameters import CodecParameters, TransferConfig
from tasks.source.volumes import VolumeError, resolve_source


@flow(name="emzip-edge-scan")
def edge_scan_flow(
    acquisition_root: str,
    outbox: str,
    transfer: TransferConfig,
    only_volume: str = "",
    block_shape: list[int] | None = None,
    settle_seconds: float = 30.0,
    codec: CodecParameters | None = None,
    batch_size: int = 8,
    workers: int = 1,
    cluster: str = "",
) -> dict[str, Any]:
    """Run the acquisition flow for each volume folder under ``acquisition_root``.

    ``only_volume`` (a folder name) restricts the scan to one volume: triggers pass the volume
    named by the event. Folders that are not (yet) volumes are skipped with a log line. Each
    volume's id is its folder name plus its acquisition's id (``tasks.source.identity``): a folder
    written again under the same name is a new volume, never mistaken for the shipped one.

    ``workers`` > 1 codes each acquisition's blocks on a local Dask cluster of that many
    single-threaded workers; ``cluster`` (``tcp://scheduler:8786``) on an existing Dask cluster,
    whose workers (started with ``--preload flows.dask_preload``) see the acquisition and the
    outbox at the same paths (``docs/operations.md``, "Edge workers on several nodes").
    """
    run_acquisition = acquisition_flow
    if cluster or workers > 1:
        from flows.dask_workers import dask_task_runner

        run_acquisition = acquisition_flow.with_options(task_runner=dask_task_runner(workers, cluster or None))
    logger = get_run_logger()
    root = Path(acquisition_root)
    results: dict[str, Any] = {}
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for folder in folders:
        if only_volume and folder.name != only_volume:
            continue
        try:
            resolve_source(folder, identify=False)
        except VolumeError as exc:
            logger.info("%s: skipped: %s", folder.name, exc)
            continue
        results[folder.name] = run_acquisition(
            acquisition=str(folder),
            outbox=outbox,
            transfer=transfer,
            block_shape=block_shape,
            settle_seconds=settle_seconds,
            codec=codec,
            batch_size=batch_size,
        )
    logger.info("scanned %d volume(s) under %s", len(results), root)
    return results
