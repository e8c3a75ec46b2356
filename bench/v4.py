# ruff: noqa: E501
"""Format v4 against JPEG-XL e7, side by side in one run: bits, decode and encode MB/s.

    python -m bench.v4 [--out bench/results_v4.json]

Blocks of 64x256x256 (or the volume's size) from the FlyEM and ISBI volumes of ../shared/data.
Every round trip is checked. Decoders run on one thread (and v4 also on 2); v4 encodes with
2 threads, training included: the first block of a volume trains from scratch (default
effort), the next ones warm-start from the previous block, as the edge flow does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from codec import decompress, encode, fallback

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VOLUMES = ("flyem_fib_medulla_train250", "isbi2012_train")
BLOCK = (64, 256, 256)


def _timed(fn, repeat: int = 2):  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def blocks(volume: np.ndarray) -> list[np.ndarray]:
    out = []
    for z in range(0, volume.shape[0], BLOCK[0]):
        for y in range(0, volume.shape[1], BLOCK[1]):
            for x in range(0, volume.shape[2], BLOCK[2]):
                b = np.ascontiguousarray(volume[z : z + BLOCK[0], y : y + BLOCK[1], x : x + BLOCK[2]])
                if b.shape[0] >= 8:
                    out.append(b)
    return out


def run(name: str) -> dict[str, object]:
    volume = np.load(DATA / f"{name}.npy", mmap_mode="r")
    rows = []
    warm = None
    for i, block in enumerate(blocks(volume)):
        t_enc = time.perf_counter()
        result = encode(block, codec="learned", warm_start=warm, verify=False)
        t_enc = time.perf_counter() - t_enc
        warm = result.model_state
        t_dec1, out1 = _timed(lambda d=result.data: decompress(d, threads=1))
        t_dec2, out2 = _timed(lambda d=result.data: decompress(d, threads=2))
        assert np.array_equal(out1, block) and np.array_equal(out2, block)
        t_jenc, jxl = _timed(lambda b=block: fallback.encode_jpegxl(b, 7), repeat=1)
        t_jdec, jout = _timed(lambda j=jxl, b=block: fallback.decode_jpegxl(j, b.shape, np.dtype(np.uint8)))
        assert np.array_equal(jout, block)
        mb = block.nbytes / 1e6
        rows.append(
            {
                "block": i,
                "shape": list(block.shape),
                "warm": i > 0,
                "v4_bpv": 8 * len(result.data) / block.size,
                "jxl_bpv": 8 * len(jxl) / block.size,
                "v4_decode_MBs_1t": mb / t_dec1,
                "v4_decode_MBs_2t": mb / t_dec2,
                "jxl_decode_MBs": mb / t_jdec,
                "v4_encode_MBs": mb / t_enc,
                "jxl_encode_MBs": mb / t_jenc,
                "train_s": result.training.seconds if result.training else 0.0,
            }
        )
        r = rows[-1]
        print(
            f"{name} block {i} {block.shape} {'warm' if i else 'cold'}: v4 {r['v4_bpv']:.3f} bpv, jxl {r['jxl_bpv']:.3f} "
            f"({r['v4_bpv'] / r['jxl_bpv']:.4f}x); decode v4 {r['v4_decode_MBs_1t']:.1f} MB/s (2 threads "
            f"{r['v4_decode_MBs_2t']:.1f}), jxl {r['jxl_decode_MBs']:.1f}; encode v4 {r['v4_encode_MBs']:.2f} MB/s "
            f"(train {r['train_s']:.1f} s), jxl {r['jxl_encode_MBs']:.2f}",
            flush=True,
        )
    total = sum(np.prod(r["shape"]) for r in rows)

    def weighted(key: str) -> float:
        return float(sum(r[key] * np.prod(r["shape"]) for r in rows) / total)

    return {"volume": name, "blocks": rows, "v4_bpv": weighted("v4_bpv"), "jxl_bpv": weighted("jxl_bpv")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results_v4.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = [run(name) for name in VOLUMES if (DATA / f"{name}.npy").exists()]
    for r in results:
        print(
            f"{r['volume']}: v4 {r['v4_bpv']:.4f} bpv, JPEG-XL e7 {r['jxl_bpv']:.4f} ({r['v4_bpv'] / r['jxl_bpv']:.4f}x)"
        )
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
