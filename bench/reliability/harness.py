"""The shared harness: a small generated acquisition, the flows' parameters, runs in new processes, invariants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


SHAPE = (8, 64, 256)  # wide enough for a pyramid of 3 levels: a worker writes level 1, the pass level 2


BLOCK = (4, 64, 64)  # 8 blocks of 16384 voxels: the learned path, in seconds


CODEC = {"steps": 10}


VOLUME = "vol"


TEMPORARY_SUFFIXES = (".part", ".__lock", ".tmp")


def write_acquisition(root: Path, seed: int = 21) -> tuple[Path, np.ndarray]:
    """A generated EM-like acquisition as a TIFF slice folder ``root/microscope/vol``."""
    from flows.synthetic import em_like, write_slice_folder

    volume = em_like(SHAPE, seed=seed)
    folder = root / "microscope" / VOLUME
    write_slice_folder(volume, folder)
    return folder, volume


def edge_params(work: Path, folder: Path, **overrides: Any) -> dict[str, Any]:
    """The edge flow's parameters for a run in ``work`` (pruning on: nothing may go early)."""
    return {
        "acquisition": str(folder),
        "outbox": str(work / "edge" / "outbox"),
        "transfer": {"kind": "local", "destination": str(work / "datacenter" / "inbox")},
        "layout": "slices",
        "volume_name": VOLUME,
        "block_shape": list(BLOCK),
        "settle_seconds": 0.0,
        "assume_complete": True,
        "codec": CODEC,
        "batch_size": 2,
        "transfer_retries": 0,
        "prune_outbox": "delete",
        "prune_raw": "delete",
        **overrides,
    }


def restore_params(work: Path) -> dict[str, Any]:
    """The restore flow's parameters for a run in ``work``."""
    return {
        "inbox": str(work / "datacenter" / "inbox"),
        "restored": str(work / "datacenter" / "restored"),
        "ledger": str(work / "datacenter" / "ledger" / "restore.sqlite"),
    }


_RUN_FLOW = """
import json, sys
from flows.acquisition import acquisition_flow
from flows.restore import restore_flow
flow = {"edge": acquisition_flow, "restore": restore_flow}[sys.argv[1]]
flow(**json.loads(sys.argv[2]))
"""


def run_flow_process(
    which: str, params: dict[str, Any], failpoint: str | None, timeout: float = 300.0, allowed: tuple[int, ...] = ()
) -> tuple[int, str]:
    """Run the edge or restore flow in a new process (killed at ``failpoint``): (return code, stderr).

    A return code other than 0, SIGKILL or one of ``allowed`` raises ``RuntimeError``.
    """
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(REPO)}
    env.pop("EMZIP_FAILPOINT", None)
    if failpoint:
        env["EMZIP_FAILPOINT"] = failpoint
        env["EMZIP_FAILPOINTS_ARMED"] = "1"
    completed = subprocess.run(
        [sys.executable, "-c", _RUN_FLOW, which, json.dumps(params)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode not in (0, -signal.SIGKILL, *allowed):
        raise RuntimeError(f"{which} flow exited {completed.returncode}: {completed.stderr[-2000:]}")
    return completed.returncode, completed.stderr


def temporary_files(root: Path) -> list[str]:
    """Files under ``root`` that only a write in progress should have."""
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and p.name.endswith(TEMPORARY_SUFFIXES))


def transitions(ledger_path: Path, to_state: str) -> dict[str, int]:
    """How many times each block entered ``to_state`` (take-overs, logged state -> same, excluded)."""
    from tasks.store.ledger import Ledger

    if not ledger_path.exists():
        return {}
    with Ledger(ledger_path) as ledger:
        return {
            r.block_id: sum(
                1 for e in ledger.events(r.block_id) if e["to_state"] == to_state and e["from_state"] != to_state
            )
            for r in ledger.blocks()
        }


def restored_volume(work: Path) -> np.ndarray | None:
    """The restored volume, or None when there is none."""
    from flows.demo import read_restored

    path = work / "datacenter" / "restored" / f"{VOLUME}.zarr"
    return read_restored(path) if path.exists() else None
