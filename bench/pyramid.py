"""What the OME-Zarr pyramid costs a restore: the same inbox restored with and without it, in turn.

``python -m bench.pyramid VOLUME.npy [--block 64 128 128] [--repeat 3] [--voxel 8 8 8] [--target
volume|archive]`` codes the volume's blocks into an inbox as the edge ships them (default
settings), then runs the restore flow (threads) into a new folder ``--repeat`` times with ``pyramid=False`` and
``pyramid=True`` alternately, so both see the same load on a shared machine. It prints MB/s of raw
volume per restore (blocks phase, pyramid pass, and the whole flow run) and the pyramid's share of
the restore's time (medians). Every restored level 0 is compared with the source, every pyramid
level with a mean-pool of the source.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _pooled_levels(volume: np.ndarray, image: Path) -> bool:
    """Whether every pyramid level equals the level below it mean-pooled (``tasks.datacenter.pyramid.mean_pool``)."""
    from flows.demo import read_restored
    from tasks.datacenter.omezarr import read_image
    from tasks.datacenter.pyramid import mean_pool

    found = read_image(image)
    if found is None:
        return False
    below = volume
    for index in range(1, len(found.levels)):
        step = tuple(h // b for h, b in zip(found.levels[index].factor, found.levels[index - 1].factor, strict=True))
        expected = mean_pool(below, step)  # type: ignore[arg-type]
        if not np.array_equal(read_restored(image, index), expected):
            return False
        below = expected
    return True


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volume", help="a .npy volume (z, y, x)")
    parser.add_argument("--block", type=int, nargs=3, default=[64, 128, 128])
    parser.add_argument("--voxel", type=float, nargs=3, default=[8.0, 8.0, 8.0], help="voxel size z y x (nm)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--target", default="volume", choices=["volume", "archive"], help="level 0's kind")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    from flows.demo import read_restored
    from flows.restore import restore_flow
    from flows.synthetic import write_inbox

    volume = np.ascontiguousarray(np.load(args.volume))
    megabytes = volume.nbytes / 1e6
    work = Path(tempfile.mkdtemp(prefix="emzip-pyramid-"))
    inbox = work / "inbox"
    coding = time.monotonic()
    write_inbox(volume, tuple(args.block), inbox, voxel_size=tuple(args.voxel))  # type: ignore[arg-type]
    name = Path(args.volume).name
    print(f"{name} {volume.shape} coded into {inbox} in {time.monotonic() - coding:.0f} s", flush=True)
    rows: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with prefect_test_harness(server_startup_timeout=120):
        restore_flow(inbox=str(inbox), restored=str(work / "warm-up"), target=args.target)  # imports, warm-up
        for repeat in range(args.repeat):
            for pyramid in (False, True):
                target = work / f"restored-{repeat}-{int(pyramid)}"
                started = time.monotonic()
                result = restore_flow(inbox=str(inbox), restored=str(target), target=args.target, pyramid=pyramid)
                flow_seconds = time.monotonic() - started
                image = target / "vol.zarr"
                identical = bool(np.array_equal(read_restored(image), volume))
                pooled = _pooled_levels(volume, image) if pyramid else True
                if not (identical and pooled):
                    raise SystemExit(f"{image}: level 0 identical {identical}, pyramid levels pooled {pooled}")
                rows[pyramid].append(
                    {
                        "blocks": result["restore_seconds"],
                        "pyramid": result["pyramid_seconds"],
                        "flow": flow_seconds,
                    }
                )
                print(f"repeat {repeat + 1}, pyramid {pyramid}: {rows[pyramid][-1]}", flush=True)
                shutil.rmtree(target)
    shutil.rmtree(work, ignore_errors=True)
    med = {p: {k: statistics.median(r[k] for r in rows[p]) for k in ("blocks", "pyramid", "flow")} for p in rows}
    print()
    print("| restore | blocks phase (s) | pyramid pass (s) | flow run (s) | MB/s (flow run) |")
    print("|---|---|---|---|---|")
    for pyramid, label in ((False, "without pyramid"), (True, "with pyramid")):
        m = med[pyramid]
        print(f"| {label} | {m['blocks']:.2f} | {m['pyramid']:.2f} | {m['flow']:.2f} | {megabytes / m['flow']:.2f} |")
    share = (med[True]["flow"] - med[False]["flow"]) / med[False]["flow"]
    pass_share = med[True]["pyramid"] / (med[True]["blocks"] + med[True]["pyramid"])
    print(
        f"\npyramid: {share * 100:+.1f}% of the restore's flow run time (medians of {args.repeat}); "
        f"the pass is {pass_share * 100:.1f}% of blocks + pass"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
