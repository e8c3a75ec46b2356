"""One block's whole job at the edge, as a worker does it: read, code, record, verify.

The acquisition flow hands a worker (a thread, or a Dask worker process on this node or another)
a ``BlockJob``: ids, paths, the volume's description and the acquisition's model. The worker
reads the block with TensorStore straight from the acquisition, codes it with the acquisition's
model (``codec.shared``), writes the container and its provenance record into the outbox
(atomically), has the container decoded by a verifier pool process (never the process that
encoded it: ``tasks.edge.verification``) and writes the verification into the record. It
returns what the ledger needs (``CodedBlock``). No voxels pass through the flow; the flow stays
the only writer of its ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codec.settings import Settings
from tasks.edge.encoding import EncodedBlock, encode_to_outbox, outbox_paths
from tasks.edge.verification import VerifyResult, verify_container
from tasks.source.grid import BlockRef
from tasks.source.revisions import raw_stamp
from tasks.source.volumes import VolumeSource, open_volume
from tasks.store.failpoints import failpoint
from tasks.store.provenance import new_record, write_record

if TYPE_CHECKING:
    from codec.api import Progress
    from codec.shared import SharedModel

__all__ = ["BlockJob", "CodedBlock", "code_block"]


@dataclass(frozen=True)
class BlockJob:
    """What a worker needs to code one block version: small, picklable, no voxels."""

    source: dict[str, Any]
    """The acquisition (``VolumeSource.as_json``)."""
    block: dict[str, Any]
    """The block (``BlockRef.as_json``)."""
    version: int
    volume_shape: tuple[int, int, int]
    grid: tuple[int, int, int]
    voxel_size: tuple[float, float, float] | None
    units: str | None
    settings: Settings
    outbox: str
    history: list[dict[str, Any]] = field(default_factory=list)
    """The block's superseded versions (``Ledger.versions``), recorded in provenance."""


@dataclass(frozen=True)
class CodedBlock:
    """A block coded, recorded and verified by a worker: what the flow writes into its ledger."""

    encoded: EncodedBlock
    verification: VerifyResult
    stamp: str | None
    read_seconds: float
    shared: SharedModel | None = field(repr=False)
    """The model the block was coded with (a new one when it was decided on this block)."""


def code_block(job: BlockJob, shared: SharedModel | None, on_progress: Progress | None = None) -> CodedBlock:
    """Read, code (with ``shared`` when it fits), record and verify one block version in the outbox.

    Raises what reading, coding or verifying raises (``VolumeError``, ``VerificationError``,
    ``OSError``): the flow marks the block failed with the reason. Every file is written
    atomically, so a worker killed anywhere leaves the block to be coded again, never half-written.
    """
    block = BlockRef.from_json(job.block)
    outbox = Path(job.outbox)
    started = time.monotonic()
    volume = open_volume(VolumeSource.from_json(job.source))
    stamp = raw_stamp(volume, block)  # before the read: a file rewritten during it shows up next run
    data = volume.read(block.bounds)
    read_seconds = time.monotonic() - started
    encoded, model = encode_to_outbox(block, data, job.settings, outbox, shared, job.version, on_progress)
    record = new_record(
        block,
        volume_shape=job.volume_shape,
        block_shape=job.grid,  # the volume's grid, not this (possibly edge) block's own shape
        dtype=data.dtype.str,
        voxel_size=job.voxel_size,
        units=job.units,
        source=job.source,
    )
    record["block"]["version"] = job.version
    if job.history:
        record["supersedes"] = [
            {key: item[key] for key in ("version", "bounds", "state", "raw_sha256", "compressed_sha256", "reason")}
            for item in job.history
        ]
    record["encoding"] = encoded.encoding
    record["verification"] = None
    record["timings_s"] = {"read": round(read_seconds, 3), "encode": round(encoded.seconds, 3)}
    _, prov_path = outbox_paths(outbox, block, job.version)
    write_record(prov_path, record)
    failpoint("record.written")
    del data  # the verifier decodes from the outbox file; the block's voxels are not needed any more
    result = verify_container(
        encoded.container_path,
        raw_sha256=encoded.raw_sha256,
        compressed_sha256=encoded.compressed_sha256,
        shape=block.shape,
        dtype=record["block"]["dtype"],
    )
    record["verification"] = result.as_json()
    record["timings_s"]["verify"] = result.seconds
    write_record(prov_path, record)
    failpoint("verify.done")
    return CodedBlock(encoded, result, stamp, read_seconds, model)
