"""One JSON provenance record per shipped block, written beside it (``<block>.prov.json``).

The one place that knows the record's shape; ``docs/provenance.md`` describes every field. A
facility loads these into its catalogue: they say what the block is (raw and compressed sha256
and sizes), how it was coded (codec path and why, model settings and weights hash, training),
with what (package versions, device, host), under which Prefect runs, how long each stage took,
how it was verified, and how it travelled (the transfer's id and outcome, since Globus forgets
task history after 30 days). No secret ever enters a record.
"""

from __future__ import annotations

import json
import platform
import socket
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.source.grid import BlockRef
from tasks.store.atomic import atomic_write_json

RECORD_VERSION = 1
PACKAGES = ("emzip", "torch", "constriction", "tensorstore", "prefect", "numpy", "globus-sdk", "imagecodecs")

__all__ = ["RECORD_VERSION", "load_record", "new_record", "package_versions", "write_record"]


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the bytes and the pipeline."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _prefect_ids() -> dict[str, str | None]:
    try:
        from prefect.runtime import flow_run, task_run

        return {"flow_run_id": flow_run.id, "flow_run_name": flow_run.name, "task_run_id": task_run.id}
    except Exception:  # outside a Prefect run the runtime raises or returns None
        return {"flow_run_id": None, "flow_run_name": None, "task_run_id": None}


def new_record(
    block: BlockRef,
    *,
    volume_shape: tuple[int, int, int],
    block_shape: tuple[int, int, int],
    dtype: str,
    voxel_size: tuple[float, float, float] | None,
    units: str | None,
    source: dict[str, Any],
) -> dict[str, Any]:
    """A record with what is known before coding; stages fill in their sections."""
    return {
        "record_version": RECORD_VERSION,
        "created": datetime.now(UTC).isoformat(),
        "block": {**block.as_json(), "shape": list(block.shape), "dtype": dtype},
        "volume": {
            "name": block.volume,
            "shape": list(volume_shape),
            "block_shape": list(block_shape),
            "voxel_size": list(voxel_size) if voxel_size else None,
            "units": units,
            "source": source,
        },
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "packages": package_versions(),
        "prefect": _prefect_ids(),
        "timings_s": {},
    }


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a record atomically."""
    atomic_write_json(path, record)


def load_record(path: Path) -> dict[str, Any]:
    """Read a record; ValueError naming the file when it is not a provenance record we read."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable provenance record ({exc})") from exc
    if not isinstance(record, dict) or record.get("record_version") != RECORD_VERSION:
        raise ValueError(f"{path}: not an emzip provenance record of version {RECORD_VERSION}")
    return record
