"""Verify a container in a separate process: decode from disk, compare sha256, shape and dtype.

Another interpreter with one torch thread and no CUDA decodes the file exactly as the data center
will (no state shared with the encoder: not its model objects, caches or thread settings), so a
container that passes here decodes anywhere. The interpreters are long-lived workers of
``tasks.edge.verifier_pool`` (start-up paid once, not per block). Nothing is shipped unless this passes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.edge.verifier_pool import VerifierFailedError, VerifierPool, shared_pool
from tasks.store.checksums import file_sha256

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
    pool: VerifierPool | None = None,
) -> VerifyResult:
    """Decode ``path`` in a pool worker process and compare; raise ``VerificationError`` on any difference.

    ``pool`` defaults to this process's shared pool. A worker that dies or hangs is replaced and
    the block verified again; twice is a ``VerificationError`` (never a pass).
    """
    started = time.monotonic()
    on_disk = file_sha256(path)
    if on_disk != compressed_sha256:
        raise VerificationError(f"{path}: container on disk has sha256 {on_disk[:12]}, wrote {compressed_sha256[:12]}")
    try:
        seen = (pool or shared_pool()).check(path)
    except VerifierFailedError as exc:
        raise VerificationError(str(exc)) from exc
    if not seen["ok"]:
        raise VerificationError(f"{path}: verifying decode failed: {seen['error']}")
    retried = f", after {'; '.join(seen['lost_verifiers'])}" if seen["lost_verifiers"] else ""
    result = VerifyResult(
        ok=False,
        decoded_sha256=seen["sha256"],
        compressed_sha256=on_disk,
        shape=tuple(seen["shape"]),
        dtype=seen["dtype"],
        seconds=round(time.monotonic() - started, 3),
        process=f"verifier pool worker pid {seen['pid']}, torch threads {seen['threads']}, "
        f"nice {seen.get('niceness', 0)}, scheduling {seen.get('policy', 'normal')}{retried}",
    )
    if result.shape != tuple(shape) or result.dtype != dtype:
        raise VerificationError(f"{path}: decoded {result.dtype}{list(result.shape)}, expected {dtype}{list(shape)}")
    if result.decoded_sha256 != raw_sha256:
        raise VerificationError(
            f"{path}: decoded sha256 {result.decoded_sha256[:12]} differs from the raw block {raw_sha256[:12]}"
        )
    return VerifyResult(**{**asdict(result), "ok": True})
