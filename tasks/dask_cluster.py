"""A local Dask cluster sized and configured for emzip's workers: one core each, quiet, no heap trimming.

The edge and the restore (``flows.dask_workers``, under Prefect) and ``emzip convert``
(``tasks.datacenter.convert_pool``, without Prefect) start their local clusters here, so every
local worker runs with the settings measured for coding and decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["WORKER_QUIET_CONFIG", "WORKER_UNSET_ENVIRONMENT", "start_local_cluster", "worker_config"]

#: Variables Dask's nanny would set for its workers that emzip's workers must not have.
#: ``MALLOC_TRIM_THRESHOLD_=65536`` (Dask's default, to hand memory back to the OS sooner) makes
#: glibc trim the heap on the decoder's many mid-sized frees: restoring 16 FlyEM blocks took 9.4 s
#: with it and 6.5 s without in one process, measured side by side (``bench.restore_dask``).
WORKER_UNSET_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_",)
#: Dask settings for local workers: no statistical profiler (it samples the decoding thread's
#: stack every 10 ms), event-loop tick and memory checks once a second (every 20 and 100 ms by
#: default). Measured together on 32 FlyEM blocks, 3 runs each: 1 worker 6.1 s instead of 6.7 s,
#: 2 workers 3.5 s instead of 4.1 s (1.72x instead of 1.63x); the profiler alone gave part of it,
#: tick and memory checks alone nothing.
WORKER_QUIET_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
}


def worker_config() -> dict[str, Any]:
    """The Dask settings to start local workers under (``dask.config.set``): quiet, without the unset variables.

    Read by each nanny as it starts (and kept for a worker it restarts).
    """
    unset = {f"distributed.nanny.pre-spawn-environ.{name}": None for name in WORKER_UNSET_ENVIRONMENT}
    return {**unset, **WORKER_QUIET_CONFIG}


def start_local_cluster(workers: int, preload: Sequence[str] = ()) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` single-threaded worker processes (no dashboard),
    each importing ``preload`` as it starts, under ``worker_config``; the caller closes it."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(worker_config()):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            preload=list(preload),
        )
