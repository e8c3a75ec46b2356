"""The daily flight check: one tiny synthetic block through encode, verify and transfer.

It proves, on the node and with the configured transfer backend, that the model trains, the
container decodes bit-exactly in a separate process, and the destination receives and confirms
the bytes; it fails loudly otherwise, so the Prefect UI shows a red run before real data suffers.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from codec.settings import Settings
from flows.parameters import TransferConfig, transfer_dict
from flows.steps import encode_block, ship_batch, verify_block
from flows.synthetic import em_like
from tasks.edge.shipping import backend_from_config
from tasks.source.grid import BlockRef
from tasks.transfer import OutboxFile, TransferBatch


@flow(name="emzip-flight-check")
def flight_check_flow(transfer: TransferConfig, steps: int = 30) -> dict[str, Any]:
    """Encode (learned path forced), verify in a separate process and ship one 8x64x64 block."""
    logger = get_run_logger()
    volume_name = f"flight-check-{uuid.uuid4().hex[:8]}"
    block = BlockRef(volume_name, 0, 8, 0, 64, 0, 64)
    data = em_like(block.shape, seed=11)
    work = Path(tempfile.mkdtemp(prefix="emzip-flight-"))
    try:
        settings = Settings(steps=steps, codec="learned")
        encoded, _ = encode_block(block.block_id, block.as_json(), data, settings, str(work))
        verify_block(
            block.block_id,
            str(encoded.container_path),
            encoded.raw_sha256,
            encoded.compressed_sha256,
            list(block.shape),
            data.dtype.str,
        )
        backend = backend_from_config(transfer_dict(transfer))
        item = OutboxFile(
            encoded.container_path,
            encoded.compressed_sha256,
            encoded.compressed_bytes,
            f"flight-check/{encoded.container_path.name}",
            block.block_id,
        )
        report = ship_batch(backend, TransferBatch(volume_name, volume_name, (item,)), backend.new_submission_id())
        logger.info(
            "flight check passed: %s, %.3f bits/voxel, transfer %s",
            encoded.codec,
            encoded.bits_per_voxel,
            report.status,
        )
        return {"codec": encoded.codec, "bits_per_voxel": encoded.bits_per_voxel, "transfer": report.status}
    finally:
        shutil.rmtree(work, ignore_errors=True)
