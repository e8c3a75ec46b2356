"""emzip against PNG and JPEG-XL on real EM volumes, measured side by side in one run.

    python -m bench.codec_bench [VOLUME.npy ...] [--effort 2] [--json out.json]

Each volume is cut into blocks of at most 64 slices and 256 x 256 voxels. Every codec's
output is decoded and compared with the block; a mismatch aborts the run. Bits per voxel count
every byte each codec returns (emzip's include its header, model weights and checksums).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import torch

from codec import Settings, decompress, encode

DEFAULT_VOLUMES = sorted((Path(__file__).resolve().parents[2] / "shared" / "data").glob("*.npy"))
BLOCK = (64, 256, 256)


def blocks(volume: np.ndarray) -> Iterator[np.ndarray]:
    """Blocks of at most BLOCK voxels, in z, then y, then x order."""
    for z in range(0, volume.shape[0], BLOCK[0]):
        for y in range(0, volume.shape[1], BLOCK[1]):
            for x in range(0, volume.shape[2], BLOCK[2]):
                yield np.ascontiguousarray(volume[z : z + BLOCK[0], y : y + BLOCK[1], x : x + BLOCK[2]])


def _per_slice(encode_slice: Callable[[np.ndarray], bytes], decode_slice: Callable[[bytes], np.ndarray]):
    def enc(block: np.ndarray) -> list[bytes]:
        return [encode_slice(s) for s in block]

    def dec(parts: list[bytes]) -> np.ndarray:
        return np.stack([decode_slice(p) for p in parts])

    return enc, dec


CLASSIC = {
    "PNG (level 9)": _per_slice(lambda s: imagecodecs.png_encode(s, level=9), imagecodecs.png_decode),
    "JPEG-XL (lossless, effort 7)": _per_slice(
        lambda s: imagecodecs.jpegxl_encode(s, lossless=True, effort=7), imagecodecs.jpegxl_decode
    ),
}


def run(paths: list[Path], settings: Settings) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in paths:
        volume = np.load(path, mmap_mode="r")
        totals: dict[str, dict[str, float]] = {}
        warm = None
        block_seconds: list[float] = []
        paths_used: dict[str, int] = {}
        for i, block in enumerate(blocks(volume)):
            t0 = time.perf_counter()
            result = encode(block, settings, warm_start=warm)
            t1 = time.perf_counter()
            restored = decompress(result.data)
            t2 = time.perf_counter()
            if not np.array_equal(restored, block):
                raise SystemExit(f"emzip round trip failed on {path.name} block {i}")
            warm = result.model_state or warm
            block_seconds.append(t1 - t0)
            paths_used[result.codec] = paths_used.get(result.codec, 0) + 1
            _add(totals, "emzip", len(result.data), block.nbytes, t1 - t0, t2 - t1)
            print(
                f"  {path.name} block {i} {block.shape}: emzip {8 * len(result.data) / block.size:.3f} bpv "
                f"({result.codec}), encode {t1 - t0:.1f} s, decode {t2 - t1:.1f} s",
                flush=True,
            )
            for name, (enc, dec) in CLASSIC.items():
                t0 = time.perf_counter()
                parts = enc(block)
                t1 = time.perf_counter()
                back = dec(parts)
                t2 = time.perf_counter()
                if not np.array_equal(back, block):
                    raise SystemExit(f"{name} round trip failed on {path.name} block {i}")
                _add(totals, name, sum(len(p) for p in parts), block.nbytes, t1 - t0, t2 - t1)
        jxl_bits = totals["JPEG-XL (lossless, effort 7)"]["bytes"]
        for name, t in totals.items():
            rows.append(
                {
                    "volume": path.name,
                    "shape": list(volume.shape),
                    "codec": name,
                    "bits_per_voxel": 8 * t["bytes"] / t["raw"],
                    "ratio_to_jpegxl": t["bytes"] / jxl_bits,
                    "encode_MBps": t["raw"] / 1e6 / t["encode_s"],
                    "decode_MBps": t["raw"] / 1e6 / t["decode_s"],
                    "encode_s_per_block": (sum(block_seconds) / len(block_seconds)) if name == "emzip" else None,
                    "paths": paths_used if name == "emzip" else None,
                }
            )
    return rows


def _add(totals: dict[str, dict[str, float]], name: str, size: int, raw: int, enc: float, dec: float) -> None:
    t = totals.setdefault(name, {"bytes": 0, "raw": 0, "encode_s": 0.0, "decode_s": 0.0})
    t["bytes"] += size
    t["raw"] += raw
    t["encode_s"] += enc
    t["decode_s"] += dec


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| volume | codec | bits/voxel | x JPEG-XL | encode MB/s | decode MB/s | emzip s/block |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_block = f"{r['encode_s_per_block']:.1f}" if r["encode_s_per_block"] is not None else ""
        lines.append(
            f"| {r['volume']} | {r['codec']} | {r['bits_per_voxel']:.3f} | {r['ratio_to_jpegxl']:.3f} | "
            f"{r['encode_MBps']:.3f} | {r['decode_MBps']:.3f} | {per_block} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volumes", nargs="*", type=Path, default=DEFAULT_VOLUMES)
    parser.add_argument("--effort", type=int, default=Settings().effort)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.volumes:
        raise SystemExit("no volumes given and ../shared/data has none")
    settings = Settings(effort=args.effort, verify=False)
    print(
        f"torch threads: {torch.get_num_threads()}, device: {'cuda' if torch.cuda.is_available() else 'cpu'}, "
        f"settings: {settings}",
        flush=True,
    )
    rows = run(args.volumes, settings)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
