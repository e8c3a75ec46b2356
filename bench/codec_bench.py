"""The codec benchmark of issue 2: every volume in ../shared/data through `emzip bench`.

    python -m bench.codec_bench [--effort 2] [--out bench/]

A thin wrapper: `emzip bench` (flows/cli.py, tasks/benchmark.py) does the work, codes each volume
in blocks of at most 64x256x256 with emzip and, in the same run, PNG, JPEG-XL (effort 7),
JPEG-LS, JPEG 2000, WebP, zstd and xz, checks every round trip, and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.cli import main as emzip

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> int:
    """Run `emzip bench` on every .npy volume in ../shared/data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--effort", default="2")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args()
    volumes = sorted(str(p) for p in SHARED_DATA.glob("*.npy"))
    if not volumes:
        raise SystemExit(f"no volumes in {SHARED_DATA} (../shared is absent)")
    return emzip(["bench", *volumes, "--out", args.out, "--effort", args.effort])


if __name__ == "__main__":
    raise SystemExit(main())
