"""Restore throughput on Dask: the same inbox restored with 1 and with 2 worker processes.

``python -m bench.restore_dask VOLUME.npy [--block 64 128 128] [--repeat 3]`` codes the volume's
blocks into an inbox as the edge ships them (container + provenance record), then runs the restore
flow (``target=volume``: decode, write zarr v3, read back, sha256) on the local Dask cluster that
``flows.dask_workers.dask_task_runner`` builds, with 1 and with 2 single-threaded worker processes,
and the same blocks restored by 1 and 2 plain processes with no Prefect and no Dask (the bound the
flow is measured against: what this machine's two cores give two independent decoders), all four
in turn in every repeat, so that each kind sees the same load on a shared machine. It prints MB/s
of raw volume restored in the restore phase (first submission to last result; the cluster's
start-up, worker imports included, is listed apart), each kind's scaling from 1 to 2 (medians),
and the flow's share of the plain processes' scaling. Every restored volume is compared with the
source.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np


def _restore_plain(jobs: list[tuple[str, str, str]]) -> None:
    """Restore ``(inbox, container, restored root)`` jobs with the restore code alone (a pool
    process: one torch thread, like a worker)."""
    import torch

    from tasks.datacenter.restoring import load_received, restore_block

    torch.set_num_threads(1)
    for inbox, container, target in jobs:
        item = load_received(Path(inbox), Path(container))
        assert item is not None
        restore_block(item, Path(target))


def _plain_seconds(inbox: Path, target: Path, workers: int) -> float:
    """Seconds to restore every block of ``inbox`` into ``target`` in ``workers`` processes (started beforehand)."""
    from tasks.datacenter.restoring import find_received, prepare_targets

    shutil.rmtree(target, ignore_errors=True)
    items = find_received(inbox).received
    prepare_targets(items, target, "volume")
    jobs = [(str(inbox), str(item.container_path), str(target)) for item in items]
    with get_context("spawn").Pool(workers) as pool:
        pool.map(_restore_plain, [[] for _ in range(workers)])  # imports done before the clock starts
        started = time.monotonic()
        pool.map(_restore_plain, [jobs[i::workers] for i in range(workers)])
        return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volume", type=Path)
    parser.add_argument("--block", nargs=3, type=int, default=[64, 128, 128])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each worker count (alternating)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    from flows.dask_workers import dask_task_runner
    from flows.demo import read_restored
    from flows.restore import restore_flow
    from flows.synthetic import write_inbox

    volume = np.load(args.volume)
    block = (args.block[0], args.block[1], args.block[2])
    rows: list[tuple[str, int, int, float, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="emzip-restore-bench-") as scratch,
        prefect_test_harness(server_startup_timeout=120),
    ):
        inbox = Path(scratch) / "inbox"
        write_inbox(volume, block, inbox, codec={"verify": False})
        blocks = len(list(inbox.glob("*/*.emz")))
        for _ in range(args.repeat):
            for workers in (1, 2):
                os.environ["EMZIP_DASK_WORKERS"] = str(workers)
                restored = Path(scratch) / f"restored-{workers}"
                shutil.rmtree(restored, ignore_errors=True)
                result = restore_flow.with_options(task_runner=dask_task_runner())(
                    inbox=str(inbox), restored=str(restored)
                )
                if not np.array_equal(read_restored(restored / "vol.zarr"), volume):
                    raise AssertionError(f"restore with {workers} workers is not identical")
                seconds, start = result["restore_seconds"], result["runner_start_seconds"]
                rows.append(("flow, Dask", workers, result["handled"], seconds, start))
            os.environ.pop("EMZIP_DASK_WORKERS", None)
            for workers in (1, 2):
                restored = Path(scratch) / "restored-plain"
                plain = _plain_seconds(inbox, restored, workers)
                if not np.array_equal(read_restored(restored / "vol.zarr"), volume):
                    raise AssertionError(f"restore by {workers} plain processes is not identical")
                rows.append(("plain processes", workers, blocks, plain, 0.0))
    runs: dict[tuple[str, int], list[float]] = {}
    for how, workers, _, seconds, _ in rows:
        runs.setdefault((how, workers), []).append(seconds)
    median = {key: statistics.median(values) for key, values in runs.items()}
    print(f"{blocks} blocks of {list(block)}, {volume.nbytes / 1e6:.1f} MB raw\n")
    print("| restored by | workers | blocks | restore s | MB/s | x 1 worker (same kind, medians) | cluster start s |")
    print("|---|---|---|---|---|---|---|")
    for how, workers, handled, seconds, start in rows:
        scaling = median[how, 1] / median[how, workers]
        print(
            f"| {how} | {workers} | {handled} | {seconds:.2f} | {volume.nbytes / seconds / 1e6:.2f} | "
            f"{scaling:.2f} | {start:.1f} |"
        )
    flow, plain = (
        median["flow, Dask", 1] / median["flow, Dask", 2],
        median["plain processes", 1] / median["plain processes", 2],
    )
    print(
        f"\n2 workers / 1 worker (medians): flow on Dask {flow:.2f}x, plain processes {plain:.2f}x; "
        f"the flow keeps {flow / plain:.2f} of this machine's own scaling"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
