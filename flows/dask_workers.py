"""The Dask workers the edge and the restore run their tasks on: a local cluster, or one at an address.

``dask_task_runner`` is prefect-dask's runner for one flow; ``local_dask_cluster`` one local
cluster for several flows in a row (``emzip run``: the edge, then the restore), its address given
to each flow's runner. Local workers start with ``WORKER_PRELOAD``, without
``WORKER_UNSET_ENVIRONMENT`` and with ``WORKER_QUIET_CONFIG``; ``start_task_runner`` starts a
flow's cluster and warms every worker (``flows.dask_preload.warm_worker``) before the first task.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "WORKER_PRELOAD",
    "WORKER_QUIET_CONFIG",
    "WORKER_UNSET_ENVIRONMENT",
    "SettingError",
    "dask_task_runner",
    "local_dask_cluster",
    "local_workers",
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
#: Variables Dask's nanny would set for its workers that the restore must not have.
#: ``MALLOC_TRIM_THRESHOLD_=65536`` (Dask's default, to hand memory back to the OS sooner) makes
#: glibc trim the heap on the decoder's many mid-sized frees: restoring 16 FlyEM blocks took 9.4 s
#: with it and 6.5 s without in one process, measured side by side (``bench.restore_dask``).
WORKER_UNSET_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_",)
#: Dask settings for local restore workers: no statistical profiler (it samples the decoding
#: thread's stack every 10 ms), event-loop tick and memory checks once a second (every 20 and
#: 100 ms by default). Measured together on 32 FlyEM blocks, 3 runs each: 1 worker 6.1 s instead
#: of 6.7 s, 2 workers 3.5 s instead of 4.1 s (1.72x instead of 1.63x); the profiler alone gave
#: part of it, tick and memory checks alone nothing.
WORKER_QUIET_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
}


@contextlib.contextmanager
def local_dask_cluster(workers: int) -> Iterator[str]:
    """A local Dask cluster of ``workers`` single-threaded worker processes for several flows in a row
    (``emzip run``: the edge, then the restore); yields its scheduler's address, closes it after.

    Its workers start as ``dask_task_runner``'s do: with ``WORKER_PRELOAD``, without
    ``WORKER_UNSET_ENVIRONMENT``, with ``WORKER_QUIET_CONFIG``. One cluster for both flows: each
    worker's start-up and first-task costs are paid once, not twice.
    """
    import dask
    from distributed import LocalCluster

    unset = {f"distributed.nanny.pre-spawn-environ.{name}": None for name in WORKER_UNSET_ENVIRONMENT}
    with dask.config.set({**unset, **WORKER_QUIET_CONFIG}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            preload=list(WORKER_PRELOAD),
        )
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
    out of the blocks' timing and reports it apart. Local
    workers start without ``WORKER_UNSET_ENVIRONMENT`` and with ``WORKER_QUIET_CONFIG`` (see there).
    """
    import dask
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if not isinstance(runner, DaskTaskRunner):
        return 0.0
    started = time.monotonic()
    unset = {f"distributed.nanny.pre-spawn-environ.{name}": None for name in WORKER_UNSET_ENVIRONMENT}
    with dask.config.set({**unset, **WORKER_QUIET_CONFIG}):  # read by each nanny as it starts, kept for restarts
        client = runner.client  # the property starts or connects to the cluster
    from flows.dask_preload import warm_worker

    client.run(warm_worker)  # every worker's first-task costs at once, before the first block
    return time.monotonic() - started


def task_runner_width() -> int:
    """How many tasks the flow's task runner runs at once: a Dask cluster's worker threads, else 1."""
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if not isinstance(runner, DaskTaskRunner):
        return 1
    return max(1, sum(runner.client.nthreads().values()))
