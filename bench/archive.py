"""Data-center bytes per voxel: emzip archive against today's zstd volume and JPEG-XL, and archive reads.

``python -m bench.archive VOLUME.npy [...] [--block 64 256 256]`` cuts each volume into blocks as
the edge does, codes every block with the codec's default settings (what the edge ships), and
stores the volume three ways, side by side in one run:

- **emzip archive**: ``tasks.datacenter.archive`` (zarr v3, chunks = blocks, the containers as chunk files);
- **zstd zarr v3**: ``tasks.datacenter.destination`` (today's restored volume: sharded by block, zstd 3);
- **JPEG-XL**: lossless effort 7 per slice of every block (the classic reference of emzip bench).

It prints bytes on disk per voxel (bits per voxel) for each, and the throughput of reading a
64-slice region (full y and x) through zarr-python from the archive and from the zstd volume.
Every store is read back whole and compared with the source.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REGION_SLICES = 64


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(volume: np.ndarray, name: str, block: tuple[int, int, int], work: Path) -> dict[str, Any]:
    """Store ``volume`` as archive, zstd zarr v3 and JPEG-XL; sizes, times and region read rates."""
    import imagecodecs
    import zarr

    from codec import Settings, compress
    from tasks.datacenter.archive import chunk_path, open_archive
    from tasks.datacenter.destination import open_destination, write_block
    from tasks.source.grid import block_grid
    from tasks.store.atomic import atomic_write_bytes
    from tasks.store.checksums import array_sha256

    voxels = volume.size
    shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    archive, zstd_volume = work / f"{name}-archive.zarr", work / f"{name}-zstd.zarr"
    open_archive(archive, shape, volume.dtype, block, {"source": name})
    store = open_destination(zstd_volume, shape, volume.dtype, block)
    jpegxl_bytes, seconds = 0, {"emzip encode": 0.0, "zstd write": 0.0, "JPEG-XL encode": 0.0}
    for ref in block_grid(name, shape, block):
        data = np.ascontiguousarray(volume[ref.z0 : ref.z1, ref.y0 : ref.y1, ref.x0 : ref.x1])
        started = time.perf_counter()
        atomic_write_bytes(chunk_path(archive, ref, block), compress(data, Settings()))
        seconds["emzip encode"] += time.perf_counter() - started
        started = time.perf_counter()
        write_block(store, ref, data, array_sha256(data))
        seconds["zstd write"] += time.perf_counter() - started
        started = time.perf_counter()
        jpegxl_bytes += sum(len(imagecodecs.jpegxl_encode(s, lossless=True, effort=7)) for s in data)
        seconds["JPEG-XL encode"] += time.perf_counter() - started
    rates = {}
    for label, path in (("emzip archive", archive), ("zstd zarr v3", zstd_volume)):
        opened = zarr.open_array(str(path), mode="r")
        if not np.array_equal(opened[:], volume):
            raise AssertionError(f"{path} does not read back identical")
        depth = min(REGION_SLICES, shape[0])
        started = time.perf_counter()
        region = np.asarray(zarr.open_array(str(path), mode="r")[:depth])
        elapsed = time.perf_counter() - started
        rates[label] = round(region.nbytes / elapsed / 1e6, 2)
    sizes = {
        "emzip archive": _disk_bytes(archive),
        "zstd zarr v3": _disk_bytes(zstd_volume),
        "JPEG-XL": jpegxl_bytes,
    }
    return {
        "volume": name,
        "shape": list(shape),
        "block": list(block),
        "bits_per_voxel": {k: round(8.0 * v / voxels, 3) for k, v in sizes.items()},
        "bytes": sizes,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "region_read_mb_s": rates,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure each volume; print the table; write ``results_archive.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volumes", nargs="+", type=Path, help=".npy volumes, (z, y, x) uint8")
    parser.add_argument("--block", nargs=3, type=int, default=[64, 256, 256], help="block = chunk shape (z y x)")
    parser.add_argument("--out", type=Path, default=Path("bench"))
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="emzip-archive-bench-") as scratch:
        for path in args.volumes:
            volume = np.load(path)
            block = (args.block[0], args.block[1], args.block[2])
            results.append(measure(volume, path.stem, block, Path(scratch)))
    header = ["volume", "emzip archive", "zstd zarr v3 (today)", "JPEG-XL", "archive / zstd"]
    print("| " + " | ".join([*header, "64-slice read: archive", "zstd"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        b, rate = r["bits_per_voxel"], r["region_read_mb_s"]
        print(
            f"| {r['volume']} | {b['emzip archive']} | {b['zstd zarr v3']} | {b['JPEG-XL']} | "
            f"{b['emzip archive'] / b['zstd zarr v3']:.3f} | "
            f"{rate['emzip archive']} MB/s | {rate['zstd zarr v3']} MB/s |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results_archive.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
