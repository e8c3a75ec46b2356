"""Read throughput of 64-slice blocks: zarr v3 and a TIFF slice folder through TensorStore,
beside a plain numpy read of the same bytes, measured side by side in one run.

    python -m bench.read_bench [--depth 128] [--size 1024] [--repeats 3]

The volume is written once into a temporary folder (zarr v3 with raw chunks 64x256x256, sharded
into 64x512x512 shards; uncompressed TIFF slices; a .npy file), then every 64 x 512 x 512 block
is read through ``tasks.source.volumes`` (the pipeline's own reader) and through ``np.load(mmap_mode)``
+ copy. Reads are warm (the page cache holds the files): this measures the software path, not
the disk. Prints a table; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from flows.synthetic import write_chunked, write_slice_folder
from tasks.source.grid import block_grid
from tasks.source.volumes import open_volume, resolve_source, shared_context

BLOCK = (64, 512, 512)


def _volume(depth: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (depth, size, size), dtype=np.uint8)
    return base


def _time_reads(read, blocks, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for block in blocks:
            read(block)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=128)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    volume = _volume(args.depth, args.size)
    megabytes = volume.nbytes / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_chunked(volume, root / "vol.zarr", "zarr3", chunk=(64, 256, 256), shard=(64, 512, 512))
        write_slice_folder(volume, root / "slices", fmt="tif")
        np.save(root / "vol.npy", volume)
        blocks = list(block_grid("v", volume.shape, BLOCK))
        context = shared_context(cache_bytes=0)
        results = {}
        for name, path in (
            ("zarr v3 (TensorStore)", root / "vol.zarr"),
            ("TIFF slices (TensorStore)", root / "slices"),
        ):
            opened = open_volume(resolve_source(path), context)
            results[name] = _time_reads(lambda b, v=opened: v.read(b.bounds), blocks, args.repeats)
        mapped = np.load(root / "vol.npy", mmap_mode="r")
        results["numpy .npy (mmap + copy)"] = _time_reads(
            lambda b: np.ascontiguousarray(mapped[b.z0 : b.z1, b.y0 : b.y1, b.x0 : b.x1]), blocks, args.repeats
        )
    print(f"volume {volume.shape} uint8 = {megabytes:.0f} MB, {len(blocks)} blocks of {BLOCK}, best of {args.repeats}")
    baseline = results["numpy .npy (mmap + copy)"]
    print(f"{'reader':28s} {'seconds':>8s} {'MB/s':>8s} {'vs numpy':>9s}")
    rows = []
    for name, seconds in results.items():
        rows.append(
            {"reader": name, "seconds": seconds, "mb_per_s": megabytes / seconds, "vs_numpy": baseline / seconds}
        )
        print(f"{name:28s} {seconds:8.3f} {megabytes / seconds:8.0f} {baseline / seconds:9.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"volume": list(volume.shape), "block": list(BLOCK), "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
