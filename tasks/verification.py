"""Verify a container in a separate process: decode from disk, compare sha256, shape and dtype.

A fresh interpreter with one torch thread decodes the file exactly as the data center will (no
state shared with the encoder: not its model objects, caches or thread settings), so a container
that passes here decodes anywhere. Nothing is shipped unless this passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.checksums import file_sha256
from tasks.failpoints import failpoint

__all__ = ["VerificationError", "VerifyResult", "verify_container"]


class VerificationError(Exception):
    """The container did not decode to the original block; the message says how it differed."""


@dataclass(frozen=True)
class VerifyResult:
    """What the verifying process saw."""

    ok: bool
    decoded_sha256: str
    compressed_sha256: str
    shape: tuple[int, ...]
    dtype: str
    seconds: float
    process: str

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form for the provenance record."""
        return asdict(self)


def verify_container(
    path: Path,
    *,
    raw_sha256: str,
    compressed_sha256: str,
    shape: tuple[int, ...],
    dtype: str,
    timeout: float = 1800.0,
) -> VerifyResult:
    """Decode ``path`` in a new process and compare; raise ``VerificationError`` on any difference."""
    started = time.monotonic()
    on_disk = file_sha256(path)
    if on_disk != compressed_sha256:
        raise VerificationError(f"{path}: container on disk has sha256 {on_disk[:12]}, wrote {compressed_sha256[:12]}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with subprocess.Popen(
        [sys.executable, "-m", "tasks.verify_worker", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as worker:
        failpoint("verify.decoding")
        try:
            stdout, stderr = worker.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            worker.kill()
            worker.communicate()
            raise VerificationError(f"{path}: verifying decode took longer than {timeout:.0f} s") from exc
    if worker.returncode != 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise VerificationError(f"{path}: verifying decode failed: {last}")
    seen = json.loads(stdout)
    result = VerifyResult(
        ok=False,
        decoded_sha256=seen["sha256"],
        compressed_sha256=on_disk,
        shape=tuple(seen["shape"]),
        dtype=seen["dtype"],
        seconds=round(time.monotonic() - started, 3),
        process=f"pid {seen['pid']}, torch threads {seen['threads']}",
    )
    if result.shape != tuple(shape) or result.dtype != dtype:
        raise VerificationError(f"{path}: decoded {result.dtype}{list(result.shape)}, expected {dtype}{list(shape)}")
    if result.decoded_sha256 != raw_sha256:
        raise VerificationError(
            f"{path}: decoded sha256 {result.decoded_sha256[:12]} differs from the raw block {raw_sha256[:12]}"
        )
    return VerifyResult(**{**asdict(result), "ok": True})
