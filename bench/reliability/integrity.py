"""Same-name acquisitions, crafted grids and dtypes at the data center, a convert killed between steps.

Each sweep counts what a facility would call a disaster: data lost (a source never restored, or
deleted unshipped), data overwritten (a restored voxel changed by another block), and runs that
stop everything for one bad block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.reliability.harness import BLOCK, CODEC, REPO, SHAPE


def _slices(volume: np.ndarray, folder: Path) -> Path:
    from flows.synthetic import write_slice_folder

    write_slice_folder(volume, folder)
    return folder


def same_name_acquisitions(work: Path) -> dict[str, Any]:
    """Two acquisitions in folders both called ``run1``, through one edge and one data center.

    With raw pruning on (``delete``): every block of both must be restored, identical to its
    source, into two volumes; no raw file of the second may go before its own blocks shipped.
    Needs a Prefect API.
    """
    from flows.acquisition import acquisition_flow
    from flows.demo import read_restored
    from flows.restore import restore_flow
    from flows.synthetic import em_like

    volumes = {"a": em_like(SHAPE, seed=31), "b": em_like(SHAPE, seed=32)}
    outbox, inbox, restored = work / "edge" / "outbox", work / "datacenter" / "inbox", work / "datacenter" / "restored"
    names = {}
    for key, volume in volumes.items():
        folder = _slices(volume, work / key / "run1")
        edge = acquisition_flow(
            acquisition=str(folder),
            outbox=str(outbox),
            transfer={"kind": "local", "destination": str(inbox)},
            layout="slices",
            block_shape=list(BLOCK),
            settle_seconds=0.0,
            assume_complete=True,
            codec=CODEC,
            prune_raw="delete",
        )
        names[key] = edge["volume"]
    restore_flow(inbox=str(inbox), restored=str(restored))
    identical = {}
    for key, volume in volumes.items():
        path = restored / f"{names[key]}.zarr"
        identical[key] = path.is_dir() and bool(np.array_equal(read_restored(path), volume))
    return {
        "volume_ids": names,
        "distinct_ids": len(set(names.values())) == 2,
        "identical": identical,
        "lost": sum(not ok for ok in identical.values()),
    }


def _forge(
    inbox: Path, record: dict[str, Any], data: np.ndarray, bounds: list[list[int]], grid: list[int], acquisition: str
) -> None:
    """A valid container of ``data`` with a schema-valid record placing it at ``bounds`` on ``grid``."""
    import copy
    import hashlib

    from codec import Settings, compress
    from tasks.store.checksums import array_sha256

    container = compress(data, Settings(steps=0))
    forged = copy.deepcopy(record)
    stem = f"z{bounds[0][0]:04d}_y{bounds[1][0]:04d}_x{bounds[2][0]:04d}"
    forged["block"].update({"bounds": bounds, "id": f"vol/{stem}", "shape": list(data.shape), "dtype": data.dtype.str})
    forged["volume"]["block_shape"] = grid
    forged["volume"]["source"]["acquisition"]["id"] = acquisition
    forged["encoding"].update(
        {
            "raw_sha256": array_sha256(data),
            "raw_bytes": data.nbytes,
            "compressed_sha256": hashlib.sha256(container).hexdigest(),
            "compressed_bytes": len(container),
        }
    )
    (inbox / "vol" / f"{stem}.emz").write_bytes(container)
    (inbox / "vol" / f"{stem}.prov.json").write_text(json.dumps(forged))


def crafted_targets(work: Path) -> dict[str, Any]:
    """Records that disagree with an already restored volume arrive beside a genuine block of another
    volume: another grid (a 1x1x1 block inside restored data), another dtype, another acquisition.
    Each must be refused alone, the restored voxels unchanged, the other volume restored. Needs a
    Prefect API."""
    from flows.demo import read_restored
    from flows.restore import restore_flow
    from flows.synthetic import em_like, write_inbox

    inbox, restored = work / "inbox", work / "restored"
    mine = "a" * 32
    original = em_like((24, 32, 32), seed=41)
    write_inbox(original[:8], (8, 32, 32), inbox, name="vol", codec={"steps": 0}, acquisition=mine)
    record_path = inbox / "vol" / "z0000_y0000_x0000.prov.json"
    record = json.loads(record_path.read_text())
    record["volume"]["shape"] = [24, 32, 32]  # the acquisition is 24 slices; two blocks still to come
    record_path.write_text(json.dumps(record))
    restore_flow(inbox=str(inbox), restored=str(restored), damaged_after=0)
    before = read_restored(restored / "vol.zarr")
    value = np.full((1, 1, 1), (int(before[3, 0, 0]) + 99) % 256, np.uint8)
    _forge(inbox, record, value, [[3, 4], [0, 1], [0, 1]], [1, 1, 1], mine)
    _forge(inbox, record, original[8:16].astype(np.uint16) * 3, [[8, 16], [0, 32], [0, 32]], [8, 32, 32], mine)
    _forge(inbox, record, original[16:24] ^ 0xFF, [[16, 24], [0, 32], [0, 32]], [8, 32, 32], "b" * 32)
    genuine = em_like((8, 32, 32), seed=45)
    write_inbox(genuine, (8, 32, 32), inbox, name="other", codec={"steps": 0}, acquisition="c" * 32)
    result = restore_flow(inbox=str(inbox), restored=str(restored), damaged_after=0)
    after = read_restored(restored / "vol.zarr")
    other = restored / "other.zarr"
    reasons = {row["block"]: row.get("reason", "") for row in result["rows"]}
    return {
        "tried": 3,
        "overwritten_voxels": int(np.count_nonzero(after[:8] != before[:8])) + int(np.count_nonzero(after[8:])),
        "other_volume_restored": other.is_dir() and bool(np.array_equal(read_restored(other), genuine)),
        "refused_alone": sum(1 for b, why in reasons.items() if b.startswith("vol/") and "refused" in why),
        "reasons": reasons,
    }


_KILL_CONVERT = """
import sys
from pathlib import Path
from codec.settings import Settings
from tasks.datacenter.convert import convert_volume
from tasks.source.volumes import resolve_source
source = resolve_source(sys.argv[1], layout="slices", write_id=False)
convert_volume(source, Path(sys.argv[2]), Settings(steps=0), (4, 64, 64))
"""


def convert_killed_between_steps(work: Path) -> dict[str, Any]:
    """``emzip convert`` SIGKILLed after a block's chunk is placed and before the ledger records it,
    then resumed: the resume must finish and the archive equal the source."""
    import zarr

    from flows.synthetic import em_like

    volume = em_like((8, 64, 128), seed=51)
    folder = _slices(volume, work / "run1")
    archive = work / "archive.zarr"
    env = {**os.environ, "EMZIP_FAILPOINT": "convert.placed#2", "EMZIP_FAILPOINTS_ARMED": "1", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", _KILL_CONVERT, str(folder), str(archive)], env=env, cwd=REPO)
    env.pop("EMZIP_FAILPOINT")
    resumed = subprocess.run(
        [sys.executable, "-c", _KILL_CONVERT, str(folder), str(archive)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    level0 = archive / "0"  # the OME-Zarr image's full-resolution archive
    identical = resumed.returncode == 0 and bool(np.array_equal(zarr.open_array(str(level0), mode="r")[:], volume))
    return {
        "killed": killed.returncode == -9,
        "resumed": resumed.returncode == 0,
        "identical": identical,
        "error": resumed.stderr[-300:] if resumed.returncode else "",
    }


def verifier_waiters(work: Path, threads: int = 3) -> dict[str, Any]:
    """A pool of one verifier whose every worker dies mid-decode, ``threads`` blocks waiting for it:
    each must get an answer (a typed failure), none may wait for ever."""
    import threading

    from codec import Settings, compress
    from flows.synthetic import em_like
    from tasks.edge.verifier_pool import VerifierFailedError, VerifierPool
    from tasks.store.failpoints import ARMED, ENVIRONMENT

    work.mkdir(parents=True, exist_ok=True)
    path = work / "block.emz"
    path.write_bytes(compress(em_like((4, 64, 64), seed=11), Settings(steps=0)))
    saved = {name: os.environ.get(name) for name in (ENVIRONMENT, ARMED)}
    os.environ.update({ENVIRONMENT: "verifier.decoding", ARMED: "1"})  # inherited by every worker
    pool = VerifierPool(size=1, timeout=60)
    answers: list[str] = []

    def check() -> None:
        try:
            pool.check(path)
            answers.append("passed")
        except VerifierFailedError:
            answers.append("failed")

    try:
        waiting = [threading.Thread(target=check, daemon=True) for _ in range(threads)]
        for thread in waiting:
            thread.start()
        for thread in waiting:
            thread.join(timeout=120)
    finally:
        pool.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {
        "waiters": threads,
        "hung": sum(t.is_alive() for t in waiting),
        "passed": answers.count("passed"),
        "failed_typed": answers.count("failed"),
    }
