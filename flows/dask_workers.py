"""The Dask workers the edge and the restore run their tasks on: a local cluster, or one at an address.

``dask_task_runner`` is prefect-dask's runner for one flow; ``local_dask_cluster`` one local
cluster for several flows in a row (``emzip run``: the edge, then the restore), its address given
to each flow's runner. Local workers start with ``WORKER_PRELOAD``, under
``tasks.dask_cluster.worker_config`` (quiet, no heap trimming); ``start_task_runner`` starts a
flow's cluster and warms every worker (``flows.dask_preload.warm_worker``) before the first task.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from tasks.dask_cluster import WORKER_QUIET_CONFIG, WORKER_UNSET_ENVIRONMENT, start_local_cluster, worker_config

__all__ = [
    "WORKER_PRELOAD",
    "WORKER_QUIET_CONFIG",
    "WORKER_UNSET_ENVIRONMENT",
    "SettingError",
    "dask_task_runner",
    "local_dask_cluster",
    "local_workers",
    "retire_worker",
    "runs_on_dask",
    "start_task_runner",
    "task_runner_width",
]


class SettingError(ValueError):
    """An ``EMZIP_*`` environment setting is malformed; the message names the variable."""


def local_workers() -> int:
    """Restore workers on this node: ``EMZIP_DASK_WORKERS`` (a positive integer), or one per core."""
    raw = os.environ.get("EMZIP_DASK_WORKERS", "").strip()
    if not raw:
        return os.cpu_count() or 1
    if not raw.isdigit() or int(raw) < 1:
        raise SettingError(f"EMZIP_DASK_WORKERS={raw!r}: expected a positive integer (restore workers on this node)")
    return int(raw)


#: Imported by every Dask worker as it starts (codec, torch, TensorStore, tables: about 3 s), not by
#: its first task; a cluster started by hand takes the same with ``dask worker --preload flows.dask_preload``.
WORKER_PRELOAD = ("flows.dask_preload",)


@contextlib.contextmanager
def local_dask_cluster(workers: int) -> Iterator[str]:
    """A local Dask cluster of ``workers`` single-threaded worker processes for several flows in a row
    (``emzip run``: the edge, then the restore); yields its scheduler's address, closes it after.

    Its workers start as ``dask_task_runner``'s do: with ``WORKER_PRELOAD``, under
    ``tasks.dask_cluster.worker_config``. One cluster for both flows: each worker's start-up and
    first-task costs are paid once, not twice.
    """
    cluster = start_local_cluster(workers, WORKER_PRELOAD)
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


def dask_task_runner(workers: int | None = None, address: str | None = None) -> Any:
    """prefect-dask's runner: the cluster at ``address`` (default ``EMZIP_DASK_SCHEDULER``), or a
    local cluster of ``workers`` (default ``EMZIP_DASK_WORKERS``, else one per core)
    single-threaded worker processes, each importing ``WORKER_PRELOAD`` as it starts. The edge
    (``emzip run --workers/--cluster``) and the restore use the same workers.
    """
    from prefect_dask import DaskTaskRunner

    address = address or os.environ.get("EMZIP_DASK_SCHEDULER")
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers or local_workers(),
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "preload": list(WORKER_PRELOAD),
        }
    )


def start_task_runner() -> float:
    """Start the flow's Dask cluster now, if it has one not yet started; returns the seconds taken.

    prefect-dask starts its cluster at the first submission; starting it here keeps worker
    start-up (processes, imports, each worker's first Prefect task: ``flows.dask_preload.warm_worker``)
    out of the blocks' timing and reports it apart. Local workers start under
    ``tasks.dask_cluster.worker_config``.
    """
    import dask

    runner = _flow_dask_runner()
    if runner is None:
        return 0.0
    started = time.monotonic()
    with dask.config.set(worker_config()):  # read by each nanny as it starts, kept for restarts
        client = runner.client  # the property starts or connects to the cluster
    from flows.dask_preload import warm_worker

    client.run(warm_worker)  # every worker's first-task costs at once, before the first block
    return time.monotonic() - started


def _flow_dask_runner() -> Any:
    """The running flow's task runner when it is prefect-dask's; None otherwise (threads, no flow)."""
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    return runner if isinstance(runner, DaskTaskRunner) else None


def runs_on_dask() -> bool:
    """Whether the flow's task runner is prefect-dask's (its tasks run on Dask workers)."""
    return _flow_dask_runner() is not None


def task_runner_width() -> int:
    """How many tasks the flow's task runner runs at once: a Dask cluster's worker threads, else 1."""
    runner = _flow_dask_runner()
    if runner is None:
        return 1
    return max(1, sum(runner.client.nthreads().values()))


def retire_worker(address: str) -> int:
    """Retire the Dask worker at ``address`` from the flow's cluster unless it is the last one;
    returns how many other workers the cluster has (0: none, so nothing was retired; also 0
    when the flow runs its tasks in threads).

    The edge retires a worker whose outbox writes fail while the outbox takes writes from the
    flow (``flows.edge_scheduler``): that worker's node lost its mount, and every block it took
    would fail on it. Dask hands the tasks it held to the others; its nanny does not restart it.
    """
    runner = _flow_dask_runner()
    if runner is None:
        return 0
    client = runner.client
    others = [worker for worker in client.nthreads() if worker != address]
    if others and address in client.nthreads():
        client.retire_workers([address], close_workers=True, remove=True)
    return len(others)
