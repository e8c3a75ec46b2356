"""Kill -9 at every named step of the edge and restore flows, then resume and check every invariant."""

from __future__ import annotations

import json
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.reliability.harness import (
    BLOCK,
    VOLUME,
    edge_params,
    restore_params,
    restored_volume,
    run_flow_process,
    temporary_files,
    transitions,
)

#: Which pass of each point to kill at: later passes leave earlier blocks finished, so "exactly
#: once" is tested across the kill.
KILL_PASS = {
    "encode.train": 3,
    "encode.written": 3,
    "record.written": 2,
    "verify.decoding": 2,
    "verify.done": 3,
    "copy.partial": 3,
    "copy.done": 1,
    "prune.outbox": 2,
    "prune.raw": 2,
    "restore.write": 2,
    "pyramid.block": 2,
    "restore.written": 3,
    "pyramid.chunk": 1,
}


#: The sample CI runs (one per stage: training, mid-copy, restore write); --full runs every point.
SAMPLE_POINTS = ("encode.written", "copy.partial", "restore.write")


def pruned_early(work: Path, folder: Path, volume: np.ndarray) -> list[str]:
    """Outbox containers or raw slices gone although their block's copy is not confirmed at the inbox.

    Confirmed means: the inbox holds the container and its record, and the container's sha256 is
    the one the record promises (what the transfer verified). An outbox container counts as gone
    when the edge ledger says it was written (it has its sha256) and the file is not there.
    """
    from tasks.source.grid import block_grid
    from tasks.source.volumes import list_slice_files
    from tasks.store.checksums import file_sha256
    from tasks.store.ledger import Ledger

    inbox = work / "datacenter" / "inbox" / VOLUME
    outbox = work / "edge" / "outbox" / VOLUME
    ledger_path = work / "edge" / "outbox" / "ledger.sqlite"
    written: set[str] = set()
    if ledger_path.exists():
        with Ledger(ledger_path) as ledger:
            written = {r.block_id for r in ledger.blocks() if r.compressed_sha256}
    slices = list_slice_files(folder) if folder.is_dir() else {}
    early = []
    for block in block_grid(VOLUME, volume.shape, BLOCK):
        container = inbox / f"{block.file_stem}.emz"
        record = inbox / f"{block.file_stem}.prov.json"
        confirmed = (
            container.is_file()
            and record.is_file()
            and file_sha256(container) == json.loads(record.read_text())["encoding"]["compressed_sha256"]
        )
        if confirmed:
            continue
        if block.block_id in written and not (outbox / f"{block.file_stem}.emz").is_file():
            early.append(f"outbox {block.file_stem}.emz")
        early += [f"raw slice {z} of {block.block_id}" for z in range(block.z0, block.z1) if z not in slices]
    return sorted(set(early))


@dataclass
class KillOutcome:
    """One kill point: was the process killed there, and did the resumed runs end right."""

    point: str
    killed: bool
    identical: bool
    lost: int
    shipped_twice: int
    restored_twice: int
    temporaries: list[str] = field(default_factory=list)
    pruned_early: list[str] = field(default_factory=list)
    destination_agrees: bool = True
    """The inbox holds exactly one container per block, each with its record."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Everything the sweep promises held."""
        return (
            self.killed
            and self.identical
            and self.destination_agrees
            and not (self.lost or self.shipped_twice or self.restored_twice or self.temporaries or self.pruned_early)
        )


def kill_point(work: Path, template: Path, volume: np.ndarray, point: str) -> KillOutcome:
    """Kill the edge or restore flow at ``point``, resume, restore, and check every invariant.

    ``template`` is a slice folder written by ``write_acquisition`` (copied, as raw pruning deletes).
    Needs a Prefect API (a test server): the killed run is a new process, the resumed ones run here.
    """
    from flows.acquisition import acquisition_flow
    from flows.restore import restore_flow
    from tasks.source.grid import block_grid

    started = time.monotonic()
    folder = work / "microscope" / VOLUME
    shutil.copytree(template, folder)
    params = edge_params(work, folder)
    early: set[str] = set()
    nth = f"{point}#{KILL_PASS.get(point, 1)}"
    if point.startswith(("restore.", "pyramid.")):  # points of the restore flow
        acquisition_flow(**params)
        code, _ = run_flow_process("restore", restore_params(work), nth)
    else:
        code, _ = run_flow_process("edge", params, nth)
        early.update(pruned_early(work, folder, volume))
        acquisition_flow(**params)
    early.update(pruned_early(work, folder, volume))
    restore_flow(**restore_params(work))
    restored = restored_volume(work)
    shipped = transitions(work / "edge" / "outbox" / "ledger.sqlite", "shipped")
    restored_counts = transitions(work / "datacenter" / "ledger" / "restore.sqlite", "restored")
    blocks = [b.file_stem for b in block_grid(VOLUME, volume.shape, BLOCK)]
    inbox = work / "datacenter" / "inbox" / VOLUME
    arrived = sorted(p.name for p in inbox.iterdir()) if inbox.is_dir() else []
    expected = len(blocks)
    return KillOutcome(
        point=point,
        killed=code == -signal.SIGKILL,
        identical=restored is not None and restored.shape == volume.shape and bool(np.array_equal(restored, volume)),
        lost=expected - sum(1 for n in restored_counts.values() if n >= 1),
        shipped_twice=sum(1 for n in shipped.values() if n > 1),
        restored_twice=sum(1 for n in restored_counts.values() if n > 1),
        temporaries=temporary_files(work),
        pruned_early=sorted(early),
        destination_agrees=arrived == sorted([f"{s}.emz" for s in blocks] + [f"{s}.prov.json" for s in blocks]),
        seconds=round(time.monotonic() - started, 1),
    )
