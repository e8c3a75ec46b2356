"""Full disks: a real small tmpfs, filled to the last byte, under each place the pipeline writes."""

from __future__ import annotations

import contextlib
import errno
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
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
from tasks.source.grid import block_grid


@contextlib.contextmanager
def small_filesystem(where: Path, size_kib: int = 2048) -> Iterator[Path]:
    """A real tmpfs of ``size_kib`` mounted at ``where`` (OSError where mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise OSError(errno.EPERM, f"cannot mount a small tmpfs at {where}: {completed.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def can_mount_small_filesystem() -> bool:
    """Whether this machine lets us mount a tmpfs (root, or a container with CAP_SYS_ADMIN)."""
    try:
        with tempfile.TemporaryDirectory() as scratch, small_filesystem(Path(scratch) / "fs", 64):
            return True
    except OSError:
        return False


def fill(filesystem: Path) -> Path:
    """Fill ``filesystem`` to the last byte with one file; returns it (delete it to free the space)."""
    filler = filesystem / "filler"
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 16, 4096, 1):  # large writes first, then down to the last byte
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    return filler


#: Where a full disk is tried, and which part of the work folder lives on it.
SITES = {
    "outbox": "edge/outbox",
    "destination": "datacenter/inbox",
    "restored volume": "datacenter/restored",
    "edge ledger": "edge/ledger",
    "restore ledger": "datacenter/ledger",
}


@dataclass
class DiskOutcome:
    """One full-disk site: what the run said, what it left, and whether the next run completed."""

    site: str
    error: str
    names_path: bool
    partial_files: list[str]
    marked_failed: int
    lost: int
    completed_after_freeing: bool

    @property
    def ok(self) -> bool:
        """Everything the sweep promises held."""
        return (
            self.names_path
            and not (self.partial_files or self.marked_failed or self.lost)
            and self.completed_after_freeing
        )


def out_of_space_site(work: Path, template: Path, volume: np.ndarray, site: str) -> DiskOutcome:
    """Run the pipeline with ``site`` on a full tmpfs, then free the space and run again.

    Needs a Prefect API and permission to mount (``can_mount_small_filesystem``).
    """
    from flows.acquisition import acquisition_flow
    from flows.restore import restore_flow
    from tasks.store.ledger import Ledger

    folder = work / "microscope" / VOLUME
    shutil.copytree(template, folder)
    mount = work / SITES[site]
    params = edge_params(work, folder, prune_outbox="off", prune_raw="off", ledger=str(work / "edge" / "ledger" / "db"))
    messages: list[str] = []
    with small_filesystem(mount, 2048), contextlib.ExitStack() as held:
        if site.endswith("ledger"):
            # The ledger is open (its WAL and shared-memory files exist, as on a busy node) and the
            # disk fills under it: the runs meet the full disk when they write, not when they open.
            held.enter_context(Ledger(params["ledger"] if site == "edge ledger" else restore_params(work)["ledger"]))
        filler = fill(mount)
        # The runs that meet the full disk are processes of their own, as a worker's flow runs are.
        for which, arguments in (("edge", params), ("restore", restore_params(work))):
            _, stderr = run_flow_process(which, arguments, None, allowed=(1,))
            messages += [line for line in stderr.splitlines() if "Error: " in line and str(mount) in line]
        partial = temporary_files(work)
        filler.unlink()
        with Ledger(params["ledger"]) as ledger:
            messages += [reason for _, reason in ledger.failures()]
            failed_at_edge = len(ledger.failures())
        acquisition_flow(**params)
        restore_flow(**restore_params(work))
        restored = restored_volume(work)
        completed = restored is not None and bool(np.array_equal(restored, volume))
        restored_counts = transitions(work / "datacenter" / "ledger" / "restore.sqlite", "restored")
        partial += temporary_files(work)
    error = " | ".join(dict.fromkeys(m for m in messages if m))
    names_path = bool(error) and str(mount) in error and ("No space left" in error or "full" in error)
    return DiskOutcome(
        site=site,
        error=error[:400],
        names_path=names_path,
        partial_files=sorted(set(partial)),
        marked_failed=failed_at_edge,
        lost=sum(1 for _ in block_grid(VOLUME, volume.shape, BLOCK)) - len(restored_counts),
        completed_after_freeing=completed,
    )
