"""Reliability sweeps with real components, and the table of ``docs/operations.md`` "Reliability".

``python -m bench.reliability [--full]`` runs, against Prefect's own test server, TensorStore,
SQLite, the codec and the local transfer backend:

- crafted inbox records (absolute and dotted volume names, ids that lie about their bounds, bounds
  outside the volume, huge shapes, wrong dtypes, symbolic links out of the inbox, ...) beside one
  good block, through the restore flow: nothing written outside the restored root, nothing
  crafted restored, every crafted file refused and left in place;
- kill -9 at every named step of the edge and restore flows (``tasks.failpoints``), then a run
  that resumes: volume identical, every block shipped and restored exactly once, no temporary
  files left, nothing pruned before its copy was confirmed at the destination;
- full disks (a real, small tmpfs filled to the last byte, where the machine lets us mount one)
  under the outbox, the destination, the restored volume and the ledger: the run stops with an
  error naming the path and the cause, nothing partial under a final name, and the next run after
  space is freed completes;
- several processes claiming from thousands of blocks in one ledger: no double claims, none lost;
- a deterministic fuzz of containers and provenance records: no wrong data, no untyped exception.

``tests/test_reliability.py`` runs a sample of each sweep in CI (``EMZIP_RELIABILITY_FULL=1``
runs them all there too).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHAPE = (8, 64, 128)
BLOCK = (4, 64, 64)  # 4 blocks of 16384 voxels: the learned path, in seconds
CODEC = {"steps": 10}
VOLUME = "vol"
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
    "restore.written": 3,
}
#: The sample CI runs (one per stage: training, mid-copy, restore write); --full runs every point.
SAMPLE_POINTS = ("encode.written", "copy.partial", "restore.write")
TEMPORARY_SUFFIXES = (".part", ".__lock", ".tmp")

__all__ = [
    "crafted_inbox",
    "fuzz",
    "kill_point",
    "ledger_load",
    "main",
    "out_of_space_site",
]


# -- a small acquisition and the flows' parameters -----------------------------------------------


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


# -- invariants -----------------------------------------------------------------------------------


def temporary_files(root: Path) -> list[str]:
    """Files under ``root`` that only a write in progress should have."""
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and p.name.endswith(TEMPORARY_SUFFIXES))


def transitions(ledger_path: Path, to_state: str) -> dict[str, int]:
    """How many times each block entered ``to_state`` (take-overs, logged state -> same, excluded)."""
    from tasks.ledger import Ledger

    if not ledger_path.exists():
        return {}
    with Ledger(ledger_path) as ledger:
        return {
            r.block_id: sum(
                1 for e in ledger.events(r.block_id) if e["to_state"] == to_state and e["from_state"] != to_state
            )
            for r in ledger.blocks()
        }


def pruned_early(work: Path, folder: Path, volume: np.ndarray) -> list[str]:
    """Outbox containers or raw slices gone although their block's copy is not confirmed at the inbox.

    Confirmed means: the inbox holds the container and its record, and the container's sha256 is
    the one the record promises (what the transfer verified). An outbox container counts as gone
    when the edge ledger says it was written (it has its sha256) and the file is not there.
    """
    from tasks.checksums import file_sha256
    from tasks.grid import block_grid
    from tasks.ledger import Ledger
    from tasks.volumes import list_slice_files

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


def restored_volume(work: Path) -> np.ndarray | None:
    """The restored volume, or None when there is none."""
    from flows.demo import read_restored

    path = work / "datacenter" / "restored" / f"{VOLUME}.zarr"
    return read_restored(path) if path.exists() else None


# -- kill -9 at every step --------------------------------------------------------------------------


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
    from tasks.grid import block_grid

    started = time.monotonic()
    folder = work / "microscope" / VOLUME
    shutil.copytree(template, folder)
    params = edge_params(work, folder)
    early: set[str] = set()
    nth = f"{point}#{KILL_PASS.get(point, 1)}"
    if point.startswith("restore."):
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


# -- crafted inbox records ---------------------------------------------------------------------------


def _good_block(inbox: Path) -> tuple[Path, dict[str, Any], np.ndarray]:
    """One genuine received block (container + record) in ``inbox/vol``; (container, record, data)."""
    from codec.settings import Settings
    from flows.synthetic import em_like
    from tasks.encoding import encode_to_outbox, outbox_paths
    from tasks.grid import BlockRef
    from tasks.provenance import new_record, write_record

    data = em_like(BLOCK, seed=3)
    block = BlockRef(VOLUME, 0, BLOCK[0], 0, BLOCK[1], 0, BLOCK[2])
    encoded, _ = encode_to_outbox(block, data, Settings().with_overrides(steps=0), inbox)
    record = new_record(
        block, volume_shape=BLOCK, block_shape=BLOCK, dtype=data.dtype.str, voxel_size=None, units=None, source={}
    )
    record["encoding"] = encoded.encoding
    write_record(outbox_paths(inbox, block)[1], record)
    return encoded.container_path, record, data


def _crafts(record: dict[str, Any], outside: Path) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Ways a hostile or broken sender can lie in a record: label -> mutation of a copy."""

    def at(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], Any]:
        def mutate(doc: dict[str, Any]) -> Any:
            target = doc
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            return doc

        return mutate

    def volume_name(name: str) -> Callable[[dict[str, Any]], Any]:
        def mutate(doc: dict[str, Any]) -> Any:
            doc["block"]["volume"] = doc["volume"]["name"] = name
            doc["block"]["id"] = f"{name}/z0000_y0000_x0000"
            return doc

        return mutate

    return {
        "absolute volume name": volume_name(str(outside / "vol")),
        "dot-dot volume name": volume_name("../../escaped"),
        "separator in name": volume_name("a/b"),
        "leading dot name": volume_name(".hidden"),
        "newline in name": volume_name("vol\n"),
        "empty name": volume_name(""),
        "non-string name": volume_name(7),  # type: ignore[arg-type]
        "block and volume names differ": at(("volume", "name"), "other"),
        "id lies about bounds": at(("block", "id"), "vol/z0064_y0000_x0000"),
        "bounds outside volume": at(("block", "bounds"), [[0, 4], [0, 64], [0, 640]]),
        "negative bounds": at(("block", "bounds"), [[-4, 0], [0, 64], [0, 64]]),
        "bounds off the grid": at(("block", "bounds"), [[1, 4], [0, 64], [0, 64]]),
        "huge volume shape": at(("volume", "shape"), [1 << 40, 64, 64]),
        "huge block shape": at(("volume", "block_shape"), [1 << 20, 1 << 20, 1 << 20]),
        "float shape": at(("volume", "shape"), [4.0, 64, 64]),
        "bool in shape": at(("volume", "shape"), [True, 64, 64]),
        "shape not matching bounds": at(("block", "shape"), [4, 64, 65]),
        "object dtype": at(("block", "dtype"), "|O"),
        "big-endian dtype": at(("block", "dtype"), ">u2"),
        "raw_bytes lies": at(("encoding", "raw_bytes"), 1),
        "compressed_bytes zero": at(("encoding", "compressed_bytes"), 0),
        "sha256 not hex": at(("encoding", "raw_sha256"), "../" * 21 + "x"),
        "future record version": at(("record_version",), 99),
        "record is a list": lambda doc: [doc],
        "encoding missing": lambda doc: {k: v for k, v in doc.items() if k != "encoding"},
    }


def crafted_inbox(work: Path) -> dict[str, Any]:
    """Put every crafted record (and some crafted files) beside one good block; run the restore flow.

    Returns counts and the refusals: tried, written outside the root, restored, refused, left in place.
    Needs a Prefect API.
    """
    from flows.restore import restore_flow
    from tasks.checksums import file_sha256

    inbox = work / "datacenter" / "inbox"
    restored_root = work / "datacenter" / "restored"
    outside = work / "outside"
    outside.mkdir(parents=True)
    container, record, data = _good_block(inbox)
    crafted: dict[str, Path] = {}
    for index, (label, mutate) in enumerate(_crafts(record, outside).items()):
        folder = inbox / f"c{index:02d}"
        folder.mkdir()
        shutil.copy(container, folder / container.name)
        (folder / container.name.replace(".emz", ".prov.json")).write_text(json.dumps(mutate(copy.deepcopy(record))))
        crafted[label] = folder / container.name
    # files whose names, not contents, are the attack
    escape = inbox / "link-out"
    escape.symlink_to(outside, target_is_directory=True)
    shutil.copy(container, outside / container.name)
    (outside / container.name.replace(".emz", ".prov.json")).write_text(json.dumps(record))
    crafted["folder symlinked out of the inbox"] = escape / container.name
    linked = inbox / "linked"
    linked.mkdir()
    (linked / container.name).symlink_to(outside / container.name)
    shutil.copy(inbox / VOLUME / container.name.replace(".emz", ".prov.json"), linked)
    crafted["container symlinked out of the inbox"] = linked / container.name
    renamed = inbox / "vol2"
    renamed.mkdir()
    shutil.copy(container, renamed / container.name)
    shutil.copy(inbox / VOLUME / container.name.replace(".emz", ".prov.json"), renamed)
    crafted["record for another volume's folder"] = renamed / container.name
    hidden = inbox / ".hidden"
    hidden.mkdir()
    shutil.copy(container, hidden / container.name)
    hidden_record = copy.deepcopy(record)
    _crafts(record, outside)["leading dot name"](hidden_record)
    (hidden / container.name.replace(".emz", ".prov.json")).write_text(json.dumps(hidden_record))
    crafted["dot folder with matching record"] = hidden / container.name
    before = {p: file_sha256(p) for p in crafted.values() if p.exists()}

    result = restore_flow(inbox=str(inbox), restored=str(restored_root))

    outside_files = sorted(str(p) for p in outside.rglob("*") if p.is_file() and p.suffix not in (".emz", ".json"))
    escaped = [str(p) for p in work.parent.glob("escaped*")] + [
        str(p) for p in work.rglob("*.zarr") if not p.resolve().is_relative_to(restored_root.resolve())
    ]
    volumes = sorted(p.name for p in restored_root.glob("*.zarr"))
    refused = result["refused"]
    left = sum(1 for p, digest in before.items() if p.exists() and file_sha256(p) == digest)
    restored = restored_volume(work)
    return {
        "tried": len(crafted),
        "outside_root": len(outside_files) + len(escaped),
        "restored_crafted": len([v for v in volumes if v != f"{VOLUME}.zarr"]) + (result["handled"] - 1),
        "refused": sum(1 for p in crafted.values() if str(p) in refused),
        "left_in_place": left,
        "good_restored": restored is not None and bool(np.array_equal(restored, data)),
        "not_refused": sorted(label for label, p in crafted.items() if str(p) not in refused),
        "reasons": {label: refused.get(str(p), "") for label, p in crafted.items()},
    }


# -- full disks ------------------------------------------------------------------------------------


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
    from tasks.ledger import Ledger

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
        lost=4 - len(restored_counts),
        completed_after_freeing=completed,
    )


# -- ledger load -----------------------------------------------------------------------------------

_CLAIMER = """
import json, sys, time
from tasks.ledger import Ledger, worker_identity
path, start_at = sys.argv[1], float(sys.argv[2])
worker = worker_identity()
claimed = []
with Ledger(path, timeout=120) as ledger:
    while time.time() < start_at:
        time.sleep(0.001)
    while True:
        got = ledger.claim(worker, ("discovered",), limit=1)
        if not got:
            break
        ledger.advance(got[0].block_id, worker, "encoded", release=True)
        claimed.append(got[0].block_id)
print(json.dumps(claimed))
"""


def ledger_load(work: Path, workers: int, blocks: int) -> dict[str, Any]:
    """``workers`` processes claim-and-advance ``blocks`` blocks from one ledger; counts and rate."""
    from tasks.grid import BlockRef
    from tasks.ledger import Ledger

    path = work / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.discover(BlockRef("load", z, z + 1, 0, 64, 0, 64) for z in range(blocks))
    start_at = time.time() + 3.0  # every process imported and connected before the first claim
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, str(path), str(start_at)], cwd=REPO, env=env, stdout=subprocess.PIPE
        )
        for _ in range(workers)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    seconds = time.time() - start_at
    claims = [block_id for out in outputs for block_id in json.loads(out)]
    with Ledger(path) as ledger:
        left = len(ledger.blocks(states=("discovered",)))
    return {
        "workers": workers,
        "blocks": blocks,
        "claims": len(claims),
        "double_claims": len(claims) - len(set(claims)),
        "lost": blocks - len(set(claims)),  # never claimed by anyone, all workers done
        "unclaimed_left": left,
        "per_worker": [len(json.loads(out)) for out in outputs],
        "claims_per_second": round(len(claims) / max(seconds, 1e-9), 1),
    }


# -- fuzz ------------------------------------------------------------------------------------------


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits: truncate, flip bits, overwrite, insert, or delete a run of bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("truncate", "flip", "overwrite", "insert", "delete"))
        at = rng.randrange(max(len(out), 1))
        if kind == "truncate":
            del out[at:]
        elif kind == "flip":
            if out:
                out[at] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            out[at : at + 8] = rng.randbytes(8)
        elif kind == "insert":
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            del out[at : at + rng.randint(1, 16)]
    return bytes(out)


def _mutate_json(document: Any, rng: random.Random) -> Any:
    """Replace, delete or retype one random field somewhere in a JSON document."""
    values = [None, True, 0, -1, 1 << 62, 1.5, "", "../x", "/abs", [], {}, [0, 0], "vol", [[0, 1]] * 3]
    doc = copy.deepcopy(document)
    section = rng.choice(("block", "volume", "encoding", "block", "volume"))
    target = doc[section] if rng.random() < 0.95 else doc
    for _ in range(rng.randint(1, 3)):
        if isinstance(target, dict) and target:
            key = rng.choice(sorted(target))
            if rng.random() < 0.4 or not isinstance(target[key], dict | list):
                if rng.random() < 0.2:
                    del target[key]
                else:
                    target[key] = rng.choice(values)
                return doc
            target = target[key]
        elif isinstance(target, list) and target:
            index = rng.randrange(len(target))
            if rng.random() < 0.5 or not isinstance(target[index], dict | list):
                target[index] = rng.choice(values)
                return doc
            target = target[index]
    return doc


def fuzz(work: Path, containers: int, records: int, seed: int = 0) -> dict[str, Any]:
    """Mutated containers through ``decompress`` and mutated records through ``validate_record``.

    A container must decode to exactly the original block or raise an ``EmzipError``; a record must
    validate (and then name a volume whose restored path lies inside the root) or raise
    ``UnsafeInputError``. Anything else is counted.
    """
    from codec import Settings, compress, decompress
    from codec.errors import EmzipError
    from flows.synthetic import em_like
    from tasks.names import UnsafeInputError, inside
    from tasks.validation import validate_record

    rng = random.Random(seed)
    block = em_like(BLOCK, seed=seed + 1)
    originals = [
        compress(block, Settings().with_overrides(steps=0)),
        compress(block, Settings().with_overrides(codec="jpegxl")),
        compress(block.astype(np.uint16) * 3, Settings()),
    ]
    sources = [block, block, block.astype(np.uint16) * 3]
    wrong, untyped, caught = 0, [], 0
    for index in range(containers):
        which = index % len(originals)
        mutated = _mutate(originals[which], rng)
        try:
            decoded = decompress(mutated)
        except EmzipError:
            caught += 1
            continue
        except Exception as exc:
            untyped.append(f"container {index}: {type(exc).__name__}: {exc}")
            continue
        if decoded.shape != sources[which].shape or not np.array_equal(decoded, sources[which]):
            wrong += 1
    inbox = work / "inbox"
    container, record, _ = _good_block(inbox)
    record_path = container.with_name(container.stem + ".prov.json")
    accepted, refused = 0, 0
    for index in range(records):
        mutated_record = _mutate_json(record, rng)
        try:
            valid = validate_record(mutated_record, record_path, container)
            inside(work / "restored", f"{valid.block.volume}.zarr")
            accepted += 1
        except UnsafeInputError:
            refused += 1
        except Exception as exc:
            untyped.append(f"record {index}: {type(exc).__name__}: {exc}")
    return {
        "containers": containers,
        "containers_refused": caught,
        "records": records,
        "records_refused": refused,
        "records_accepted": accepted,
        "wrong_data": wrong,
        "untyped": untyped,
    }


# -- the table ---------------------------------------------------------------------------------------


def _table(results: dict[str, Any]) -> str:
    crafted, kills, disks, load, fuzzed = (
        results["crafted"],
        results["kills"],
        results["disks"],
        results["load"],
        results["fuzz"],
    )
    rows = [
        "| sweep | tried | failures |",
        "|---|---|---|",
        f"| crafted inbox records | {crafted['tried']} | written outside the root {crafted['outside_root']}, "
        f"restored {crafted['restored_crafted']}, not refused {len(crafted['not_refused'])}, "
        f"left in place {crafted['left_in_place']}/{crafted['tried']} |",
        f"| kill -9 points (edge and restore) | {len(kills)} killed and resumed "
        f"({sum(k['killed'] for k in kills)} killed at the point) | "
        f"blocks lost {sum(k['lost'] for k in kills)}, shipped twice {sum(k['shipped_twice'] for k in kills)}, "
        f"restored twice {sum(k['restored_twice'] for k in kills)}, "
        f"not identical {sum(not k['identical'] for k in kills)}, "
        f"temporary files left {sum(len(k['temporaries']) for k in kills)}, "
        f"pruned before confirmed {sum(len(k['pruned_early']) for k in kills)} |",
    ]
    if disks is None:
        rows.append("| full disks (ENOSPC) | not run: this machine does not allow mounting a small tmpfs | |")
    else:
        rows.append(
            f"| full disks (ENOSPC) | {len(disks)} sites | blocks lost {sum(d['lost'] for d in disks)}, "
            f"partial files left {sum(len(d['partial_files']) for d in disks)}, "
            f"errors not naming path and cause {sum(not d['names_path'] for d in disks)}, "
            f"not completed after freeing {sum(not d['completed_after_freeing'] for d in disks)} |"
        )
    rows += [
        f"| ledger load | {load['workers']} processes x {load['blocks']} blocks | "
        f"double claims {load['double_claims']}, lost {load['lost']}; {load['claims_per_second']} claims/s |",
        f"| fuzz | {fuzzed['containers']} containers, {fuzzed['records']} records | "
        f"wrong data {fuzzed['wrong_data']}, untyped exceptions {len(fuzzed['untyped'])} |",
    ]
    return "\n".join(rows)


def run_all(work: Path, full: bool) -> dict[str, Any]:
    """Every sweep (``full``: every kill point and more load and fuzz) under a Prefect test server."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from tasks.failpoints import POINTS

    template, volume = write_acquisition(work / "template")
    results: dict[str, Any] = {}
    with prefect_test_harness(server_startup_timeout=120):
        results["crafted"] = crafted_inbox(work / "crafted")
        points = POINTS if full else SAMPLE_POINTS
        results["kills"] = [asdict(kill_point(work / f"kill-{p}", template, volume, p)) for p in points]
        if can_mount_small_filesystem():
            results["disks"] = [
                asdict(out_of_space_site(work / f"disk-{i}", template, volume, s)) for i, s in enumerate(SITES)
            ]
        else:
            results["disks"] = None
    results["load"] = ledger_load(work / "load", 4, 4000 if full else 1000)
    results["fuzz"] = fuzz(work / "fuzz", 3000 if full else 300, 3000 if full else 300)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.reliability [--full] [--out DIR]``: run the sweeps, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every kill point, 4000 blocks of load, 3000 fuzz cases")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="where results_reliability.json goes")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="emzip-reliability-") as scratch:
        results = run_all(Path(scratch), args.full)
    results["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results_reliability.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(_table(results))
    print(f"\n{results['seconds']} s; details in {args.out / 'results_reliability.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
