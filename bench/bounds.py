"""How low can a voxel predictor go? Least-squares bounds next to JPEG-XL, per volume.

    python -m bench.bounds [volume.npy ...]     (default: every volume in ../shared/data)

For each volume, on the same blocks of at most 64x256x256 that `emzip bench` codes, a linear
least-squares predictor is fitted to a seeded sample of voxels for several neighbourhoods, and
the empirical (order-0) entropy of its rounded residuals is printed in bits per voxel:

- causal neighbourhoods a coder may use: emzip's three in-row passes (weighted by the share of
  voxels each codes), and a full raster-causal window with two previous slices;
- non-causal neighbourhoods no coder may use: all 26 neighbours (3x3x3) and the 74 of a
  5x5x3 box. Those predictors see the voxels on every side, including the ones coded later.

The question this answers: is a bit rate of 0.90x JPEG-XL within reach? When even the best
linear estimate from every surrounding voxel leaves more bits than that target, the residual is
mostly sensor noise, and only a model that beats non-causal estimation could reach it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import imagecodecs
import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BLOCK = (64, 256, 256)
SAMPLES_PER_BLOCK = 150_000
Offset = tuple[int, int, int]


def _box(dz: range, dy: range, dx: range, causal_current: bool = False) -> list[Offset]:
    out = []
    for z in dz:
        for y in dy:
            for x in dx:
                if (z, y, x) == (0, 0, 0):
                    continue
                if causal_current and z == 0 and (y > 0 or (y == 0 and x > 0)):
                    continue
                out.append((z, y, x))
    return out


_PREVIOUS = _box(range(-1, 0), range(-1, 2), range(-1, 2))
_ABOVE = [(0, dy, dx) for dy in (-2, -1) for dx in range(-3, 4)]
#: (name, [(share of voxels, column period, column residue, offsets)], causal?)
SCHEMES: list[tuple[str, list[tuple[float, int, int, list[Offset]]], bool]] = [
    (
        "emzip passes (rows above, then columns 4n, 4n+2, odd)",
        [
            (0.25, 4, 0, _PREVIOUS + _ABOVE),
            (0.25, 4, 2, _PREVIOUS + _ABOVE + [(0, 0, d) for d in (-6, -2, 2, 6)]),
            (0.5, 2, 1, _PREVIOUS + _ABOVE + [(0, 0, d) for d in (-5, -3, -1, 1, 3, 5)]),
        ],
        True,
    ),
    (
        "raster causal: 5x5x2 previous + 2 rows above + left",
        [
            (
                1.0,
                1,
                0,
                _box(range(-2, 0), range(-2, 3), range(-2, 3))
                + _box(range(0, 1), range(-2, 1), range(-3, 4), causal_current=True),
            )
        ],
        True,
    ),
    ("non-causal 3x3x3 (26 neighbours)", [(1.0, 1, 0, _box(range(-1, 2), range(-1, 2), range(-1, 2)))], False),
    ("non-causal 5x5x3 (74 neighbours)", [(1.0, 1, 0, _box(range(-1, 2), range(-2, 3), range(-2, 3)))], False),
]


def _blocks(volume: np.ndarray) -> list[np.ndarray]:
    z, h, w = volume.shape
    return [
        np.asarray(volume[z0 : z0 + BLOCK[0], y0 : y0 + BLOCK[1], x0 : x0 + BLOCK[2]])
        for z0 in range(0, z, BLOCK[0])
        for y0 in range(0, h, BLOCK[1])
        for x0 in range(0, w, BLOCK[2])
    ]


def _sample(block: np.ndarray, offsets: list[Offset], period: int, residue: int, n: int, seed: int):
    """Neighbour matrix (n, len(offsets) + 1) and targets (n,) at random interior voxels."""
    rng = np.random.default_rng(seed)
    z, h, w = block.shape
    mz = max(abs(o[0]) for o in offsets)
    my = max(abs(o[1]) for o in offsets)
    mx = max(abs(o[2]) for o in offsets)
    zs = rng.integers(mz, z - mz, n)
    ys = rng.integers(my, h - my, n)
    xs = rng.integers(mx // period + 1, (w - mx) // period - 1, n) * period + residue
    values = block.astype(np.float64)
    design = np.stack([values[zs + dz, ys + dy, xs + dx] for dz, dy, dx in offsets] + [np.ones(n)], axis=1)
    return design, values[zs, ys, xs]


def _entropy(residual: np.ndarray) -> float:
    _, counts = np.unique(np.rint(residual).astype(np.int64), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def scheme_bits(blocks: list[np.ndarray], parts: list[tuple[float, int, int, list[Offset]]]) -> float:
    """Voxel-weighted residual entropy of a scheme over the blocks (one fit per block and part)."""
    total, voxels = 0.0, 0
    for i, block in enumerate(blocks):
        bits = 0.0
        for j, (share, period, residue, offsets) in enumerate(parts):
            design, target = _sample(block, offsets, period, residue, SAMPLES_PER_BLOCK, seed=1000 * i + j)
            coef, *_ = np.linalg.lstsq(design, target, rcond=None)
            bits += share * _entropy(target - design @ coef)
        total += bits * block.size
        voxels += block.size
    return total / voxels


def jpegxl_bits(blocks: list[np.ndarray]) -> float:
    """JPEG-XL lossless (effort 7), slice by slice, as `emzip bench` runs it."""
    size = sum(len(imagecodecs.jpegxl_encode(s, lossless=True, effort=7)) for b in blocks for s in b)
    return 8.0 * size / sum(b.size for b in blocks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volumes", nargs="*")
    args = parser.parse_args()
    paths = [Path(p) for p in args.volumes] or sorted(SHARED_DATA.glob("*.npy"))
    if not paths:
        raise SystemExit(f"no volumes given and none in {SHARED_DATA} (../shared is absent)")
    print("| volume | predictor | causal | bits/voxel | x JPEG-XL |")
    print("|---|---|---|---|---|")
    for path in paths:
        start = time.monotonic()
        blocks = [b for b in _blocks(np.load(path, mmap_mode="r")) if min(b.shape) >= 8]
        reference = jpegxl_bits(blocks)
        print(f"| {path.stem} | JPEG-XL e7 (coded size) | yes | {reference:.3f} | 1.000 |")
        print(f"| {path.stem} | target: 0.90x JPEG-XL | | {0.9 * reference:.3f} | 0.900 |")
        for name, parts, causal in SCHEMES:
            bits = scheme_bits(blocks, parts)
            print(f"| {path.stem} | {name} | {'yes' if causal else 'no'} | {bits:.3f} | {bits / reference:.3f} |")
        print(f"<!-- {path.stem}: {time.monotonic() - start:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
