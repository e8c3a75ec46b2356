"""Restore throughput on Dask: the same inbox restored with 1 and with 2 worker processes.

``python -m bench.restore_dask VOLUME.npy [--block 64 128 128]`` codes the volume's blocks into
an inbox as the edge ships them (container + provenance record), then runs the restore flow
(``target=volume``: decode, write zarr v3, read back, sha256) on a local Dask cluster of 1 and
of 2 single-threaded worker processes, side by side in one run, and prints MB/s of raw volume
restored (the restore phase: submitting every block to the last result; cluster start-up listed
apart). Every restored volume is compared with the source.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volume", type=Path)
    parser.add_argument("--block", nargs=3, type=int, default=[64, 128, 128])
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness
    from prefect_dask import DaskTaskRunner

    from flows.demo import read_restored
    from flows.restore import restore_flow
    from flows.synthetic import write_inbox

    volume = np.load(args.volume)
    block = (args.block[0], args.block[1], args.block[2])
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="emzip-restore-bench-") as scratch,
        prefect_test_harness(server_startup_timeout=120),
    ):
        inbox = Path(scratch) / "inbox"
        write_inbox(volume, block, inbox, codec={"verify": False})
        for workers in (1, 2):
            runner = DaskTaskRunner(
                cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "dashboard_address": None}
            )
            restored = Path(scratch) / f"restored-{workers}"
            started = time.monotonic()
            result = restore_flow.with_options(task_runner=runner)(inbox=str(inbox), restored=str(restored))
            wall = time.monotonic() - started
            if not np.array_equal(read_restored(restored / "vol.zarr"), volume):
                raise AssertionError(f"restore with {workers} workers is not identical")
            seconds = result["restore_seconds"]
            rows.append((workers, result["handled"], seconds, volume.nbytes / seconds / 1e6, wall))
    print("| Dask workers | blocks | restore s | MB/s | x 1 worker | flow wall s (cluster start included) |")
    print("|---|---|---|---|---|---|")
    for workers, blocks, seconds, rate, wall in rows:
        print(f"| {workers} | {blocks} | {seconds:.1f} | {rate:.2f} | {rate / rows[0][3]:.2f} | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
