"""The ``emzip`` command line: compress, decompress and inspect blocks.

Prefect is imported only by the commands that run flows, so codec commands start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from flows.volume_io import VolumeFileError, atomic_write_bytes, read_volume, write_volume


class _Progress:
    """One self-overwriting status line on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.5 and done < total):
            return
        self.last = now
        sys.stderr.write(f"\r{stage}: {done}/{total}   ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _compress(args: argparse.Namespace) -> int:
    from codec import Settings, encode

    volume = read_volume(Path(args.input))
    settings = Settings(effort=args.effort, device=args.device, seed=args.seed, codec=args.codec)
    result = encode(volume, settings, progress=_Progress(not args.quiet))
    atomic_write_bytes(Path(args.output), result.data)
    bpv = 8.0 * len(result.data) / max(volume.size, 1)
    print(
        f"{args.output}: {result.codec} ({result.reason}); {volume.nbytes} -> {len(result.data)} bytes, "
        f"{bpv:.3f} bits per voxel, {result.seconds:.1f} s, round trip verified"
    )
    return 0


def _decompress(args: argparse.Namespace) -> int:
    from codec import decompress

    source = Path(args.input)
    if not source.is_file():
        raise VolumeFileError(f"{source}: no such file")
    array = decompress(source.read_bytes(), progress=_Progress(not args.quiet))
    write_volume(Path(args.output), array)
    print(f"{args.output}: {array.dtype} {array.shape}, checksum verified")
    return 0


def _info(args: argparse.Namespace) -> int:
    from codec import inspect

    source = Path(args.file)
    if not source.is_file():
        raise VolumeFileError(f"{source}: no such file")
    info = inspect(source.read_bytes())
    print(
        json.dumps(
            {
                "file": str(source),
                "codec": info.codec,
                "dtype": info.dtype,
                "shape": list(info.shape),
                "sha256": info.sha256,
                "compressed_bytes": info.compressed_bytes,
                "bits_per_voxel": round(info.bits_per_voxel, 4),
                "config": info.config,
            },
            indent=2,
        )
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Codec demo on a generated EM-like acquisition (the Prefect pipeline demo is issue 5)."""
    import hashlib

    import imagecodecs
    import numpy as np

    from codec import Settings, decompress, encode
    from flows.synthetic import em_like

    out_dir = Path(args.out)
    volume = em_like((args.slices, args.size, args.size), seed=args.seed)
    print(f"generated EM-like volume {volume.shape} uint8 ({volume.nbytes / 1e6:.1f} MB)")
    settings = Settings(effort=args.effort)
    total, png_total, warm = 0, 0, None
    started = time.monotonic()
    for z in range(0, volume.shape[0], args.block):
        block = np.ascontiguousarray(volume[z : z + args.block])
        result = encode(block, settings, warm_start=warm, progress=_Progress(not args.quiet))
        warm = result.model_state or warm
        atomic_write_bytes(out_dir / f"z{z:04d}.emz", result.data)
        restored = decompress((out_dir / f"z{z:04d}.emz").read_bytes())
        if hashlib.sha256(restored.tobytes()).hexdigest() != result.sha256:
            raise SystemExit(f"block z{z:04d}: restored block differs from the original")
        png = sum(len(imagecodecs.png_encode(s, level=9)) for s in block)
        total, png_total = total + len(result.data), png_total + png
        print(
            f"block z{z:04d}: {result.codec}, {8 * len(result.data) / block.size:.3f} bits/voxel "
            f"(PNG {8 * png / block.size:.3f}), {result.seconds:.1f} s, restored identical"
        )
    print(
        f"demo: {volume.size} voxels in {8 * total / volume.size:.3f} bits/voxel against PNG's "
        f"{8 * png_total / volume.size:.3f}; {time.monotonic() - started:.0f} s; every block restored "
        f"bit-identical; containers in {out_dir}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``emzip`` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="emzip", description="Lossless learned compression of EM volumes.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="compress a .npy or TIFF stack into an .emz container")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--effort", type=int, default=2, help="training budget 0-4 (0: classic codec only)")
    c.add_argument("--device", default="auto", help="auto, cpu or cuda")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--codec", default="auto", choices=["auto", "learned", "jpegxl", "lzma"])
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_compress)
    d = sub.add_parser("decompress", help="decode an .emz container into .npy or TIFF")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_decompress)
    i = sub.add_parser("info", help="describe an .emz container (checks its checksums, no decoding)")
    i.add_argument("file")
    i.set_defaults(func=_info)
    m = sub.add_parser("demo", help="compress, restore and verify a generated EM-like volume")
    m.add_argument("--out", default="demo-output")
    m.add_argument("--slices", type=int, default=32)
    m.add_argument("--size", type=int, default=192)
    m.add_argument("--block", type=int, default=16)
    m.add_argument("--effort", type=int, default=1)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emzip`` console script."""
    from codec import EmzipError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (VolumeFileError, EmzipError) as exc:
        name = getattr(args, "input", None) or getattr(args, "file", "")
        message = str(exc) if isinstance(exc, VolumeFileError) else f"{name}: {exc}"
        print(f"emzip: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
