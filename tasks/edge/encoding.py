"""Train-and-encode one block into the outbox (``<outbox>/<volume>/<block>.emz``)."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codec.api import Progress, encode
from codec.settings import Settings

if TYPE_CHECKING:
    from codec.shared import SharedModel
from tasks.source.grid import BlockRef, versioned_stem
from tasks.store.atomic import atomic_write_bytes, write_probe
from tasks.store.failpoints import failpoint

__all__ = ["EncodedBlock", "encode_to_outbox", "outbox_paths", "probe_outbox"]


@dataclass(frozen=True)
class EncodedBlock:
    """A block written to the outbox (not yet verified by a separate process)."""

    block: BlockRef
    container_path: Path
    raw_sha256: str
    raw_bytes: int
    compressed_sha256: str
    compressed_bytes: int
    codec: str
    reason: str
    seconds: float
    encoding: dict[str, Any]
    """The provenance record's ``encoding`` section."""

    @property
    def bits_per_voxel(self) -> float:
        """Compressed bits per voxel of the block."""
        return 8.0 * self.compressed_bytes / max(self.block.voxels, 1)


def outbox_paths(outbox: Path, block: BlockRef, version: int = 1) -> tuple[Path, Path]:
    """(container, provenance) paths of one version of a block in the outbox (``grid.versioned_stem``)."""
    folder = outbox / block.volume
    stem = versioned_stem(block, version)
    return folder / f"{stem}.emz", folder / f"{stem}.prov.json"


def probe_outbox(outbox: Path) -> OSError | None:
    """Whether this process can write into ``outbox`` (``tasks.store.atomic.write_probe``): None, or the error.

    The crash tests' broken outbox (``outbox.write!<ERRNO>``, armed in this process) fails it too.
    """
    try:
        failpoint("outbox.write", outbox)
    except OSError as exc:
        return exc
    return write_probe(outbox)


def _crash_test_points(stage: str, done: int, total: int) -> None:
    """The codec's progress callback: lets the crash tests kill a run inside training."""
    if stage == "train" and done >= 1:
        failpoint("encode.train")


def encode_to_outbox(
    block: BlockRef,
    data: np.ndarray,
    settings: Settings,
    outbox: Path,
    shared: SharedModel | None = None,
    version: int = 1,
    on_progress: Progress | None = None,
) -> tuple[EncodedBlock, SharedModel | None]:
    """Encode ``data`` (the block's voxels) and write the container atomically (as ``version``).

    ``shared`` is the acquisition's model (``codec.shared``): the block is coded with it, or
    decided again when it no longer fits. Returns the encoded block and the model the next
    blocks should use (None when this block is not learned). ``on_progress`` hears the codec's
    progress (``train`` starts and ends: a GPU slot is held only in between).
    """
    if data.shape != block.shape:
        raise ValueError(f"{block.block_id}: read {data.shape}, expected {block.shape}")

    def progress(stage: str, done: int, total: int) -> None:
        _crash_test_points(stage, done, total)
        if on_progress is not None:
            on_progress(stage, done, total)

    result = encode(data, settings, shared=shared, progress=progress)
    container_path, _ = outbox_paths(outbox, block, version)
    failpoint("outbox.write", container_path)  # the crash tests' broken outbox mount (an OSError)
    atomic_write_bytes(container_path, result.data)
    failpoint("encode.written")
    training = result.training
    compressed_sha256 = hashlib.sha256(result.data).hexdigest()
    encoding = {
        "raw_sha256": result.sha256,
        "raw_bytes": result.raw_bytes,
        "compressed_sha256": compressed_sha256,
        "compressed_bytes": len(result.data),
        "bits_per_voxel": round(8.0 * len(result.data) / max(block.voxels, 1), 6),
        "ratio_to_raw": round(result.raw_bytes / max(len(result.data), 1), 4),
        "codec": result.codec,
        "reason": result.reason,
        "settings": settings.to_json(),
        "model_sha256": result.model_sha256,
        "training": None
        if training is None
        else {
            "steps": training.steps,
            "seconds": round(training.seconds, 3),
            "final_validation_bits_per_voxel": training.validation_bits,
            "stopped_early": training.stopped_early,
            "device": training.device,
        },
        "seconds": round(result.seconds, 3),
        "process": f"pid {os.getpid()} on {socket.gethostname()}",
    }
    encoded = EncodedBlock(
        block=block,
        container_path=container_path,
        raw_sha256=result.sha256,
        raw_bytes=result.raw_bytes,
        compressed_sha256=compressed_sha256,
        compressed_bytes=len(result.data),
        codec=result.codec,
        reason=result.reason,
        seconds=result.seconds,
        encoding=encoding,
    )
    return encoded, result.shared
