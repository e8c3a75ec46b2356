"""Format v4 against JPEG-XL e7, side by side in one run: bits, decode and encode MB/s.

    python -m bench.v4 [--out bench/results_v4.json] [--no-curve]

Blocks of 64x256x256 (or the volume's size) from the FlyEM and ISBI volumes of ../shared/data.
Every round trip is checked; decoders run on one thread (v4 also on 2, one block's stripes).

- Volume table: ``codec.encode`` at its defaults (2 torch threads, training included, the
  classic probe and the in-process round-trip check included), the first block of a volume
  from scratch, every next one warm-started from the previous block as the edge flow does.
- Curve: bits against decode MB/s on each volume's first block for several contexts and model
  widths (each trained from scratch at the default step count), which is how the default was set.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from codec import decompress, encode, fallback, inspect
from codec.settings import EFFORT_STEPS
from codec.v4 import block as v4_block
from codec.v4 import engine
from codec.v4.context import make_context

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VOLUMES = (("flyem_fib_medulla_train250", "gaussian"), ("isbi2012_train", "laplace"))
BLOCK = (64, 256, 256)
#: (previous-slice radius, slice-before radius, causal radius, width) points of the curve.
CURVE = ((2, 1, 3, 16), (1, 1, 3, 16), (2, 0, 3, 16), (1, 0, 3, 16), (1, 0, 2, 16), (1, 0, 3, 8), (1, 0, 3, 32))
T = TypeVar("T")


def _timed(fn: Callable[[], T], repeat: int = 2) -> tuple[float, T]:
    best, out = float("inf"), fn()
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def blocks(volume: np.ndarray) -> list[np.ndarray]:
    """The volume cut into BLOCK-sized blocks (edge blocks smaller), in z, y, x order."""
    out = []
    for z in range(0, volume.shape[0], BLOCK[0]):
        for y in range(0, volume.shape[1], BLOCK[1]):
            for x in range(0, volume.shape[2], BLOCK[2]):
                b = np.ascontiguousarray(volume[z : z + BLOCK[0], y : y + BLOCK[1], x : x + BLOCK[2]])
                if b.shape[0] >= 8:
                    out.append(b)
    return out


def _jpegxl(block: np.ndarray) -> tuple[bytes, float, float]:
    """JPEG-XL e7 bytes, encode and decode seconds (one thread), round trip checked."""
    t_enc, data = _timed(lambda: fallback.encode_jpegxl(block, 7), repeat=1)
    t_dec, out = _timed(lambda: fallback.decode_jpegxl(data, block.shape, np.dtype(np.uint8)))
    assert np.array_equal(out, block)
    return data, t_enc, t_dec


def run_volume(name: str) -> dict[str, Any]:
    """The volume table's rows for one volume."""
    volume = np.load(DATA / f"{name}.npy", mmap_mode="r")
    rows: list[dict[str, Any]] = []
    warm = None
    for i, block in enumerate(blocks(volume)):
        t_enc, result = _timed(lambda b=block, w=warm: encode(b, warm_start=w), repeat=1)  # type: ignore[misc]
        warm = result.model_state or warm
        t_dec1, out1 = _timed(lambda d=result.data: decompress(d, threads=1))  # type: ignore[misc]
        t_dec2, out2 = _timed(lambda d=result.data: decompress(d, threads=2))  # type: ignore[misc]
        assert np.array_equal(out1, block) and np.array_equal(out2, block)
        jxl, t_jenc, t_jdec = _jpegxl(block)
        mb = block.nbytes / 1e6
        row = {
            "block": i,
            "shape": list(block.shape),
            "codec": result.codec,
            "warm": result.codec == "learned" and bool(inspect(result.data).config["training"]["warm_start"]),
            "v4_bpv": 8 * len(result.data) / block.size,
            "jxl_bpv": 8 * len(jxl) / block.size,
            "decode_MBs_1t": mb / t_dec1,
            "decode_MBs_2t": mb / t_dec2,
            "jxl_decode_MBs": mb / t_jdec,
            "encode_MBs": mb / t_enc,
            "jxl_encode_MBs": mb / t_jenc,
            "train_s": result.training.seconds if result.training else 0.0,
        }
        rows.append(row)
        print(
            f"{name} block {i} {block.shape} {result.codec}{' warm' if row['warm'] else ''}: "
            f"{row['v4_bpv']:.3f} bpv against JPEG-XL e7 {row['jxl_bpv']:.3f} ({row['v4_bpv'] / row['jxl_bpv']:.4f}x); "
            f"decode {row['decode_MBs_1t']:.1f} MB/s (2 threads {row['decode_MBs_2t']:.1f}) against "
            f"{row['jxl_decode_MBs']:.1f}; encode {row['encode_MBs']:.2f} MB/s (training {row['train_s']:.1f} s) "
            f"against {row['jxl_encode_MBs']:.2f}",
            flush=True,
        )
    voxels = sum(int(np.prod(r["shape"])) for r in rows)
    v4 = sum(r["v4_bpv"] * np.prod(r["shape"]) for r in rows) / voxels
    jxl = sum(r["jxl_bpv"] * np.prod(r["shape"]) for r in rows) / voxels
    print(f"{name}: emzip {v4:.4f} bpv, JPEG-XL e7 {jxl:.4f} ({v4 / jxl:.4f}x)", flush=True)
    return {"volume": name, "blocks": rows, "v4_bpv": v4, "jxl_bpv": jxl}


def run_curve(name: str, family: str) -> list[dict[str, Any]]:
    """Bits against one-thread decode MB/s over contexts and widths, on the volume's first block."""
    block = blocks(np.load(DATA / f"{name}.npy", mmap_mode="r"))[0]
    jxl, _, t_jdec = _jpegxl(block)
    points = []
    for prev, before, causal, width in CURVE:
        context = make_context(prev, before, causal)
        coded = v4_block.encode(block, family, width, EFFORT_STEPS[2], 0, 2, context=context)
        job = v4_block.parse({"engine": coded.config}, coded.model, coded.data, block.shape)  # type: ignore[arg-type]
        t_dec, [out] = _timed(lambda j=job: engine.decode_blocks([(j.streams, j.shape, j.model, j.family)]))  # type: ignore[misc]
        assert np.array_equal(out, block)
        point = {
            "context": [prev, before, causal],
            "inputs": context.inputs,
            "width": width,
            "ratio": (len(coded.model) + len(coded.data)) / len(jxl),
            "decode_MBs": block.nbytes / 1e6 / t_dec,
            "jxl_decode_MBs": block.nbytes / 1e6 / t_jdec,
        }
        points.append(point)
        print(
            f"{name} curve: context {prev},{before},{causal} ({context.inputs} inputs) width {width}: "
            f"{point['ratio']:.4f}x JPEG-XL e7 bits, decode {point['decode_MBs']:.1f} MB/s "
            f"(JPEG-XL {point['jxl_decode_MBs']:.1f})",
            flush=True,
        )
    return points


def run_scaling(name: str) -> dict[str, float]:
    """One block on 2 threads against 1, beside the machine's own bound: two independent JPEG-XL
    decodes on 2 threads against one after the other (no shared work at all)."""
    block = blocks(np.load(DATA / f"{name}.npy", mmap_mode="r"))[0]
    data = encode(block).data
    jxl = fallback.encode_jpegxl(block, 7)

    def jxl_pair(threads: int) -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: fallback.decode_jpegxl(jxl, block.shape, np.dtype(np.uint8)), range(2)))

    one, _ = _timed(lambda: decompress(data, threads=1), repeat=5)
    two, _ = _timed(lambda: decompress(data, threads=2), repeat=5)
    serial, _ = _timed(lambda: jxl_pair(1), repeat=5)
    parallel, _ = _timed(lambda: jxl_pair(2), repeat=5)
    result = {"emzip_2_threads_over_1": one / two, "jpegxl_two_blocks_2_threads_over_1": serial / parallel}
    print(
        f"{name} scaling: one emzip block on 2 threads {one / two:.2f}x of 1 thread; two JPEG-XL blocks on "
        f"2 threads {serial / parallel:.2f}x of 1 (the machine's bound)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results_v4.json")
    parser.add_argument("--no-curve", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    present = [(n, f) for n, f in VOLUMES if (DATA / f"{n}.npy").exists()]
    results: dict[str, Any] = {"volumes": [run_volume(n) for n, _ in present]}
    results["scaling"] = {n: run_scaling(n) for n, _ in present}
    if not args.no_curve:
        results["curve"] = {n: run_curve(n, f) for n, f in present}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
