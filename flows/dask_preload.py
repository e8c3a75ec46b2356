"""Dask worker preload for the restore: load the restore code, and size the worker for one core.

A worker started with ``--preload flows.dask_preload`` (``flows.dask_workers.dask_task_runner``
passes it to the local cluster's workers) pays for torch, TensorStore and the codec's probability
tables (about 3 s in all) once as it starts, not in its first restore task: on a short run the
first block's warm-up would otherwise decide how well the workers scale. The same goes for
Prefect's settings: every task run rebuilds its settings context in the worker, and the first
build in a process costs 0.27-0.34 s here (pydantic-settings validating Prefect's nested settings
models for the first time), every later one 25 ms; the preload builds one. It also keeps the
worker's work outside decoding small, because on a node with a worker per core that work is
taken from the other workers: Prefect's API clients share one verified TLS context
(``flows.prefect_tls``), and TensorStore's and zarr's helper threads are as many as the worker's
task threads (``tasks.datacenter.restoring.limit_io_threads``), not as many as the node's cores.
"""

from __future__ import annotations

from typing import Any

from prefect.context import SettingsContext, get_settings_context

import flows.steps  # noqa: F401 (imported for its side effect: the restore task's modules loaded)
from codec.v4 import tables
from flows.prefect_tls import share_verified_contexts
from tasks.datacenter.restoring import limit_io_threads

tables.warm()
SettingsContext(**get_settings_context().serialize())  # what each task run's hydration does, once
share_verified_contexts()


def warm_worker() -> float:
    """Prepare this worker for edge blocks; returns the seconds it took (``Client.run`` calls it on every worker).

    Measured on this machine: a Dask worker's first Prefect task run took 5.8 s (a no-op task;
    0.08 s from the second on), and its first edge block 1.4 s more for torch and the training
    modules, which the restore's preload leaves out. Paid here, on every worker at once, before
    the first block: otherwise each worker's first block pays it, and while the second worker's
    first block waits, the first worker codes everything else.
    """
    import time

    started = time.monotonic()
    import torch  # noqa: F401 (the training side of the codec, loaded once)

    import codec.v4.train  # noqa: F401
    import tasks.edge.coding  # noqa: F401
    from flows.steps import warm_up_task

    warm_up_task()
    return time.monotonic() - started


def dask_setup(worker: Any) -> None:
    """Called by Dask once the worker has started: its I/O helpers get one thread per task thread."""
    limit_io_threads(worker.state.nthreads)
