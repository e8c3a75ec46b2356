"""Bits against encode seconds per effort level, and bits against decode speed per model size.

    python -m bench.efforts [--out bench/results_efforts.json]

On the first 64x256x256 block of each real volume in ../shared/data (FlyEM FIB-SEM, ISBI TEM),
side by side in one run: every effort level at the default model, then a few model sizes at the
default effort (the curve of bits against decode MB/s that decides the default). Encodes on the
machine's torch threads, decodes on one; every round trip is checked; JPEG-XL e7 of the same
block is the yardstick. Trains from scratch (no warm start), so later blocks of a volume, which
the pipeline warm-starts from their predecessor, do at least as well.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import torch

from codec import Settings, decompress, encode

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VOLUMES = {"flyem": ("flyem_fib_medulla_train250.npy", (64, 256, 256)), "isbi": ("isbi2012_train.npy", (30, 256, 256))}
MODEL_SIZES = ({"width": 16}, {"width": 8}, {"width": 32})


def _jpegxl_bits(block: np.ndarray) -> float:
    size = sum(len(imagecodecs.jpegxl_encode(s, lossless=True, effort=7)) for s in block)
    return 8.0 * size / block.size


def measure(block: np.ndarray, settings: Settings) -> dict[str, Any]:
    """Encode (learned path forced, no in-process check), decode on one thread, compare."""
    started = time.perf_counter()
    result = encode(block, settings.with_overrides(codec="learned", verify=False))
    encode_s = time.perf_counter() - started
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        restored = decompress(result.data)
        decode_s = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    if not np.array_equal(restored, block):
        raise RuntimeError("round trip failed")
    return {
        "bits_per_voxel": result.bits_per_voxel,
        "encode_s": encode_s,
        "train_s": result.training.seconds if result.training else 0.0,
        "steps": result.training.steps if result.training else 0,
        "decode_s": decode_s,
        "encode_MBps": block.nbytes / 1e6 / encode_s,
        "decode_MBps": block.nbytes / 1e6 / decode_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--efforts", default="1,2,3,4")
    args = parser.parse_args()
    rows = []
    print("| volume | setting | bits/voxel | x JPEG-XL | steps | encode s | encode MB/s | decode MB/s (1 thread) |")
    print("|---|---|---|---|---|---|---|---|")
    encode(np.zeros((2, 8, 8), np.uint8) + 1, codec="learned", steps=1)  # one-time imports off the clock
    for name, (file, shape) in VOLUMES.items():
        path = DATA / file
        if not path.is_file():
            print(f"{path} is absent: {name} skipped")
            continue
        block = np.ascontiguousarray(np.load(path, mmap_mode="r")[: shape[0], : shape[1], : shape[2]])
        reference = _jpegxl_bits(block)
        cases = [(f"effort {e}", Settings(effort=int(e))) for e in args.efforts.split(",")]
        cases += [(", ".join(f"{k}={v}" for k, v in size.items()), Settings(**size)) for size in MODEL_SIZES[1:]]
        for label, settings in cases:
            row = {"volume": name, "setting": label, "jpegxl_bits": reference, **measure(block, settings)}
            rows.append(row)
            print(
                f"| {name} | {label} | {row['bits_per_voxel']:.4f} | {row['bits_per_voxel'] / reference:.4f} | "
                f"{row['steps']} | {row['encode_s']:.1f} | {row['encode_MBps']:.2f} | {row['decode_MBps']:.2f} |",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
