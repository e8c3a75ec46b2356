"""Reliability sweeps with real components, and the table of ``docs/operations.md`` "Reliability".

``python -m bench.reliability [--full]`` runs, against Prefect's own test server, TensorStore,
SQLite, the codec and the local transfer backend:

- crafted inbox records (absolute and dotted volume names, ids that lie about their bounds, bounds
  outside the volume, huge shapes, wrong dtypes, symbolic links out of the inbox, ...) beside one
  good block, through the restore flow: nothing written outside the restored root, nothing
  crafted restored, every crafted file refused and left in place;
- kill -9 at every named step of the edge and restore flows (``tasks.store.failpoints``), then a run
  that resumes: volume identical, every block shipped and restored exactly once, no temporary
  files left, nothing pruned before its copy was confirmed at the destination;
- full disks (a real, small tmpfs filled to the last byte, where the machine lets us mount one)
  under the outbox, the destination, the restored volume and the ledger: the run stops with an
  error naming the path and the cause, nothing partial under a final name, and the next run after
  space is freed completes;
- the edge on Dask workers (``workers``): a worker SIGKILLed mid-block, the coordinator SIGKILLed,
  a worker whose outbox writes fail, an outbox no worker can write: the source restored, every
  block shipped and restored once, none coded twice as a new version;
- several processes claiming from thousands of blocks in one ledger: no double claims, none lost;
- a deterministic fuzz of containers and provenance records: no wrong data, no untyped exception.

``tests/test_reliability.py`` runs a sample of each sweep in CI (``EMZIP_RELIABILITY_FULL=1``
runs them all there too).
"""

from bench.reliability.crafted import crafted_inbox
from bench.reliability.disks import SITES, can_mount_small_filesystem, out_of_space_site
from bench.reliability.fuzzing import fuzz
from bench.reliability.harness import write_acquisition
from bench.reliability.kills import SAMPLE_POINTS, kill_point
from bench.reliability.load import ledger_load

__all__ = [
    "SAMPLE_POINTS",
    "SITES",
    "can_mount_small_filesystem",
    "crafted_inbox",
    "fuzz",
    "kill_point",
    "ledger_load",
    "out_of_space_site",
    "write_acquisition",
]
