"""Who converts the blocks of ``emzip convert``: this process, or the workers of a Dask cluster.

``run_blocks`` is the conversion's scheduler. It claims blocks from the ledger, marks each
block's pyramid footprint pending before anything is written, and hands the blocks to the pool,
as many at once as the pool has workers, except the first block that may train: it is converted
alone, in this process, and decides the model every later block is coded with (``codec.shared``).
Blocks are also converted here while a Dask pool is still starting. It yields each block as it
is finished; the caller records it in the ledger (the only writer).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from tasks.dask_cluster import start_local_cluster
from tasks.datacenter.convert_block import ConvertedBlock, ConvertJob, convert_block
from tasks.datacenter.pyramid import footprint_key
from tasks.store.ledger import BlockRecord, Ledger

if TYPE_CHECKING:
    from codec.shared import SharedModel

__all__ = ["BlockPool", "DaskPool", "InlinePool", "run_blocks"]

#: How often the scheduler looks whether a worker finished while all are busy.
POLL_SECONDS = 0.005


class BlockPool(Protocol):
    """Runs ``convert_block`` calls: ``width`` at once once ``ready``; ``submit`` returns a future
    (``done``, ``result``)."""

    @property
    def width(self) -> int: ...

    def ready(self) -> bool: ...

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def close(self) -> None: ...


class InlinePool:
    """This process, one block at a time (the default): the future is done when ``submit`` returns."""

    width = 1

    def ready(self) -> bool:
        """Always."""
        return True

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        """Nothing to stop."""


class DaskPool:
    """The workers of a Dask cluster: a local one of ``workers`` single-threaded processes
    (``tasks.dask_cluster``), or the one at ``address``. Workers need the source and the archive at
    the same paths (shared storage).

    The cluster starts (or is connected to) in a background thread, and its workers import the
    codec and torch there: ``run_blocks`` codes blocks in this process meanwhile (the first block,
    which decides the model, always), so neither the start nor the training waits for the other.
    """

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self._cluster: Any = None
        self._client: Any = None
        self._error: BaseException | None = None
        self._width = 1
        self._where = address or f"local cluster of {workers or os.cpu_count() or 1} workers"
        self._started = threading.Event()
        count = workers or os.cpu_count() or 1
        threading.Thread(target=self._start, args=(count, address), name="emzip-dask-start", daemon=True).start()

    def _start(self, workers: int, address: str | None) -> None:
        from distributed import Client

        try:
            if address:
                self._client = Client(address)
            else:
                self._cluster = start_local_cluster(workers)
                self._client = Client(self._cluster)
            self._client.run(_warm)  # every worker's imports at once, before its first block
            self._width = max(1, sum(self._client.nthreads().values()))
        except BaseException as exc:  # raised in the converting thread by the next call that needs the pool
            self._error = exc
        finally:
            self._started.set()

    def _wait(self) -> Any:
        self._started.wait()
        if self._error is not None:  # an OSError: emzip's command line prints it as one line
            raise ConnectionError(f"Dask {self._where}: could not start or reach it: {self._error}") from self._error
        return self._client

    def ready(self) -> bool:
        """Whether the cluster is up and its workers warm (``submit`` would not wait)."""
        return self._started.is_set()

    @property
    def width(self) -> int:
        """The cluster's worker threads when it came up (waits until it is)."""
        self._wait()
        return self._width

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._wait().submit(fn, *args, pure=False)

    def close(self) -> None:
        """Disconnect; stop the local cluster if this pool started it."""
        self._started.wait()
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _warm() -> None:
    import torch  # noqa: F401 (training and the acquisition model's weights)

    import codec.v4.train  # noqa: F401
    from codec.v4 import tables

    tables.warm()


def run_blocks(
    ledger: Ledger, worker: str, template: ConvertJob, pool: BlockPool | None, volume: str
) -> Iterator[tuple[BlockRecord, ConvertedBlock]]:
    """Convert every claimable block of ``volume`` on ``pool``; yields (record, result) as they finish.

    A worker's exception propagates (the caller releases its claims): the conversion stops and a
    run of the same command resumes it.
    """
    pool = pool or InlinePool()
    here = InlinePool()
    shared: SharedModel | None = None
    may_train = template.settings.training_steps() > 0
    deciding = decided = exhausted = False
    in_flight: list[tuple[BlockRecord, Any]] = []
    while True:
        # Until the pool is up, blocks are converted here, one at a time; the deciding one always is.
        while not exhausted and not deciding and len(in_flight) < (pool.width if pool.ready() else 1):
            claimed = ledger.claim(worker, ("discovered", "encoded"), volume=volume, limit=1)
            if not claimed:
                exhausted = True
                break
            record = claimed[0]
            ledger.mark_pyramid(volume, [footprint_key(record.block.bounds)])  # pending before it is written
            deciding = may_train and shared is None and not decided
            job = replace(template, block=record.block.as_json())
            runner = here if deciding or not pool.ready() else pool
            in_flight.append((record, runner.submit(convert_block, job, shared)))
        if not in_flight:
            return
        while not any(future.done() for _, future in in_flight):
            time.sleep(POLL_SECONDS)
        finished = [item for item in in_flight if item[1].done()]
        gone = {id(item) for item in finished}
        in_flight = [item for item in in_flight if id(item) not in gone]
        for record, future in finished:
            done: ConvertedBlock = future.result()
            if done.shared is not None and (shared is None or done.shared.key != shared.key):
                shared = done.shared
            if deciding:
                deciding, decided = False, True
            yield record, done
