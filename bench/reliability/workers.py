"""Faults of the edge on Dask workers (issue 36), each ending with nothing lost and nothing recorded twice.

- a worker SIGKILLed mid-block (container and record written, ledger not told): Dask gives its
  task to the other worker, which codes the block again under the same version;
- the coordinator (the flow's process) SIGKILLed between a worker's result and the ledger: the
  next run resumes;
- one worker whose outbox writes fail (``EIO``, its node's mount): it is retired and the other
  worker codes its blocks in the same run;
- the outbox unwritable for every process (the flow's too): no worker is retired, the run stops,
  says why, leaves every block not coded pending, and the next run completes.

Each case runs ``flows.demo.run_pipeline`` (the edge, then the restore) on a generated
acquisition and checks the restored volume voxel by voxel and both ledgers' histories. Needs a
Prefect API (a test server); the Dask workers inherit the armed failpoint through the environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.environ import environment
from bench.reliability.harness import transitions

__all__ = ["WORKER_FAULTS", "WorkerFault", "worker_fault"]

SHAPE = (8, 64, 256)
BLOCK = (4, 64, 64)  # 8 blocks: the first decides the model, the others go to two workers
CODEC = {"steps": 40, "codec": "learned"}
VOLUME = "vol"
#: The checkout holding ``bench`` (the coordinator's process imports it from there).
CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerFault:
    """One fault: did it happen, and did the runs after it end with the source, once."""

    case: str
    fired: bool
    """The fault happened (a worker or the coordinator killed, an outbox write failed)."""
    identical: bool
    lost: int
    """Blocks of the source not restored."""
    shipped_twice: int
    restored_twice: int
    recoded_as_new_version: int
    """Blocks whose ledger holds a version above 1: coded twice as different versions."""
    inbox_files: int
    """Containers in the data center's inbox (one per block when nothing arrived twice)."""
    blocks: int
    failed_blocks: int
    said: str
    """What the runs said: the error of a stopped run, the workers retired."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Everything the case promises held."""
        return (
            self.fired
            and self.identical
            and not (self.lost or self.shipped_twice or self.restored_twice or self.recoded_as_new_version)
            and self.inbox_files == self.blocks
            and self.failed_blocks == 0
        )


def _armed(point: str, once: Path | None) -> contextlib.AbstractContextManager[None]:
    """Arm ``point`` in this process's environment (inherited by the Dask workers it starts)."""
    from tasks.store.failpoints import ARMED, ENVIRONMENT, ONCE

    return environment({ENVIRONMENT: point, ARMED: "1", ONCE: None if once is None else str(once)})


def _pipeline(source: Path, site: Path, workers: int) -> dict[str, Any]:
    from flows.demo import run_pipeline

    return run_pipeline(
        source, site, layout="slices", volume_name=VOLUME, block_shape=BLOCK, codec=CODEC, workers=workers
    )


_RUN_KILLED = """
import sys
from pathlib import Path
from bench.reliability.workers import _pipeline
if __name__ == "__main__":
    _pipeline(Path(sys.argv[1]), Path(sys.argv[2]), workers=2)
"""


def _coordinator_killed(source: Path, site: Path) -> tuple[bool, str]:
    """Run the pipeline in a new process, SIGKILLed in the flow between a worker's result and the ledger."""
    from prefect.settings import PREFECT_API_URL

    from tasks.store.failpoints import ARMED, ENVIRONMENT

    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": str(CHECKOUT),
        ENVIRONMENT: "flow.coded#3",
        ARMED: "1",
    }
    killed = subprocess.run(
        [sys.executable, "-c", _RUN_KILLED, str(source), str(site)],
        env=env,
        cwd=CHECKOUT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600,
        check=False,
    )
    fired = killed.returncode == -signal.SIGKILL
    return fired, f"coordinator exit {killed.returncode}" + ("" if fired else f": {killed.stderr[-1500:]}")


def _check(case: str, fired: bool, said: str, source_volume: np.ndarray, site: Path, started: float) -> WorkerFault:
    """The invariants after the runs: restored voxel by voxel, each block shipped and restored once."""
    from flows.demo import read_restored
    from tasks.store.ledger import Ledger

    outbox_ledger = site / "edge" / "outbox" / "ledger.sqlite"
    with Ledger(outbox_ledger) as ledger:
        records = ledger.blocks(VOLUME)
    restored_path = site / "datacenter" / "restored" / f"{VOLUME}.zarr"
    restored = read_restored(restored_path) if restored_path.exists() else None
    restored_counts = transitions(site / "datacenter" / "restored" / "ledger.sqlite", "restored")
    shipped = transitions(outbox_ledger, "shipped")
    blocks = int(np.prod([-(-s // b) for s, b in zip(SHAPE, BLOCK, strict=True)]))
    inbox = site / "datacenter" / "inbox" / VOLUME
    return WorkerFault(
        case=case,
        fired=fired,
        identical=restored is not None and bool(np.array_equal(restored, source_volume)),
        lost=blocks - sum(1 for n in restored_counts.values() if n >= 1),
        shipped_twice=sum(1 for n in shipped.values() if n > 1),
        restored_twice=sum(1 for n in restored_counts.values() if n > 1),
        recoded_as_new_version=sum(1 for r in records if r.version > 1),
        inbox_files=len(list(inbox.glob("*.emz"))) if inbox.is_dir() else 0,
        blocks=blocks,
        failed_blocks=sum(1 for r in records if r.state == "failed"),
        said=said,
        seconds=round(time.monotonic() - started, 1),
    )


#: The cases, in the order the table lists them.
WORKER_FAULTS = (
    "an edge Dask worker SIGKILLed mid-block",
    "the coordinator SIGKILLed between a worker's result and the ledger",
    "an edge Dask worker whose outbox writes fail (EIO)",
    "the outbox unwritable for every process (EIO)",
)


def worker_fault(work: Path, case: str, seed: int = 366) -> WorkerFault:
    """Run ``case`` (one of ``WORKER_FAULTS``) in ``work`` and check the invariants."""
    from flows.synthetic import em_like, write_slice_folder

    started = time.monotonic()
    volume = em_like(SHAPE, seed=seed)
    source, site = work / "microscope" / VOLUME, work / "site"
    write_slice_folder(volume, source)
    once = work / "fired-once"
    said = ""
    if case == WORKER_FAULTS[0]:
        with _armed("record.written#2", once):  # a worker's second block: container and record written
            _pipeline(source, site, workers=2)
        fired = once.exists()
    elif case == WORKER_FAULTS[1]:
        fired, said = _coordinator_killed(source, site)
        _pipeline(source, site, workers=2)
    elif case == WORKER_FAULTS[2]:
        with _armed("outbox.write!EIO#2", once):  # one worker's mount breaks at its second block
            result = _pipeline(source, site, workers=2)
        retired = result["edge"]["workers_retired"]
        fired, said = once.exists() and len(retired) == 1, f"retired: {retired}"
    elif case == WORKER_FAULTS[3]:
        with _armed("outbox.write!EIO", None):  # every write into the outbox fails, the flow's probe too
            try:
                _pipeline(source, site, workers=2)
                fired, said = False, "the run did not stop"
            except OSError as exc:
                fired, said = True, str(exc)
        _pipeline(source, site, workers=2)
    else:
        raise ValueError(f"unknown case {case!r}; expected one of {WORKER_FAULTS}")
    return _check(case, fired, said, volume, site, started)
