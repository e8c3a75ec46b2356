"""Pipeline throughput: an acquisition through scan, encode, verify, ship and restore.

``python -m bench.pipeline [VOLUME.npy] [--block 64 128 128] [--slices N]`` writes the volume
(default: the FlyEM FIB-SEM volume of ``../shared/data`` when present, a generated EM-like one
otherwise) as the microscope does, one TIFF per slice, then in one run, side by side:

1. the codec alone on the same blocks, in the same order, with the same settings and warm starts
   as the edge flow: ``codec.api.encode`` (train + code, no self-check) and ``decompress``;
2. the edge flow (``acquisition_flow``: scan, TensorStore read, train and encode, verification in
   the separate verifier pool, ledger, provenance, shipping with the local backend);
3. the restore flow on the received blocks, on the local Dask cluster of ``restore_dask_flow``.

It prints MB/s of acquisition (raw uint8 bytes) for every stage (its busy seconds, summed over
blocks from the provenance records and the ledger) and end to end (the flow's wall time), next to
the codec's own encode and decode rates, and checks that the restored volume is identical.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHARED_VOLUME = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flyem_fib_medulla_train250.npy"


def _acquisition(volume_path: Path | None, slices: int | None, copies: int = 1) -> tuple[str, np.ndarray]:
    """The volume to acquire: the one given, the shared FlyEM one, or a generated one.

    ``copies`` > 1 makes a longer acquisition of the same data: the volume ``copies`` times along
    z, every other copy in reverse slice order, so that neighbouring slices stay neighbours.
    """
    from flows.synthetic import em_like

    path = volume_path or (SHARED_VOLUME if SHARED_VOLUME.is_file() else None)
    if path is None:
        name, volume = "generated EM-like (../shared/data absent)", em_like((slices or 128, 256, 256), seed=3)
    else:
        loaded = np.load(path)
        name, volume = path.name, np.ascontiguousarray(loaded[:slices] if slices else loaded)
    if copies > 1:
        name = f"{name} x{copies} along z (mirrored)"
        volume = np.concatenate([volume if i % 2 == 0 else volume[::-1] for i in range(copies)], axis=0)
    return name, volume


def _codec_alone(volume: np.ndarray, blocks: list[Any], settings: Any) -> tuple[float, float, float]:
    """(encode s, decode s, compressed bytes) of the codec on these blocks, warm-started in order."""
    from codec.api import decompress, encode

    warm = None
    encode_s = decode_s = 0.0
    size = 0
    for block in blocks:
        data = np.ascontiguousarray(volume[block.z0 : block.z1, block.y0 : block.y1, block.x0 : block.x1])
        started = time.monotonic()
        result = encode(data, settings, warm_start=warm)
        encode_s += time.monotonic() - started
        warm = result.model_state
        started = time.monotonic()
        decoded = decompress(result.data)
        decode_s += time.monotonic() - started
        if not np.array_equal(decoded, data):
            raise AssertionError(f"{block.block_id}: the codec's round trip differs")
        size += len(result.data)
    return encode_s, decode_s, float(size)


def _edge_stage_seconds(outbox: Path, ledger_path: Path) -> dict[str, float]:
    """Busy seconds per edge stage, summed over blocks (read, encode, verify from the provenance
    records; transfer from the ledger, once per batch)."""
    from tasks.store.ledger import Ledger
    from tasks.store.provenance import load_record

    stages = {"read": 0.0, "encode": 0.0, "verify": 0.0, "ship": 0.0}
    for record_path in sorted(outbox.glob("*/*.prov.json")):
        timings = load_record(record_path).get("timings_s") or {}
        for stage in ("read", "encode", "verify"):
            stages[stage] += float(timings.get(stage) or 0.0)
    with Ledger(ledger_path) as db:
        batches: dict[str, float] = {}
        for record in db.blocks():
            batches[record.batch_id or record.block_id] = float(record.timings.get("transfer") or 0.0)
    stages["ship"] = sum(batches.values())
    return stages


def _edge_timeline(ledger_path: Path, started_at: float, ended_at: float) -> dict[str, float]:
    """Where the edge flow's wall time went, from the ledger's transition times (``time.time()``).

    ``start``: flow start to the first encode's start (flow run, scan, first read); ``encoding``:
    the first encode's start to the last encode's end; ``of which between encodes``: that span
    less the encodes' own seconds; ``after the last encode``: to the flow's end, ``of which
    verifying``: to the last verification.
    """
    from tasks.store.ledger import Ledger

    encoded: list[tuple[float, float]] = []  # (end time, seconds)
    verified: list[float] = []
    with Ledger(ledger_path) as db:
        for record in db.blocks():
            for event in db.events(record.block_id):
                if event["to_state"] == "encoded":
                    encoded.append((float(event["at"]), float(record.timings.get("encode") or 0.0)))
                elif event["to_state"] == "verified":
                    verified.append(float(event["at"]))
    encoded.sort()
    first_start = encoded[0][0] - encoded[0][1]
    last_end = encoded[-1][0]
    return {
        "start": first_start - started_at,
        "encoding": last_end - first_start,
        "between encodes": (last_end - first_start) - sum(seconds for _, seconds in encoded),
        "after the last encode": ended_at - last_end,
        "verifying after the last encode": max(verified) - last_end,
    }


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volume", type=Path, nargs="?", default=None)
    parser.add_argument("--block", nargs=3, type=int, default=[64, 128, 128])
    parser.add_argument("--slices", type=int, default=None, help="acquire only the first N slices")
    parser.add_argument(
        "--copies",
        type=int,
        default=1,
        help="a longer acquisition: the volume N times along z, every other copy mirrored (per-run costs weigh less)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    from codec.settings import Settings
    from flows.acquisition import acquisition_flow
    from flows.dask_workers import dask_task_runner
    from flows.demo import read_restored
    from flows.restore import restore_flow
    from flows.synthetic import write_slice_folder
    from tasks.source.grid import block_grid

    name, volume = _acquisition(args.volume, args.slices, args.copies)
    grid = (args.block[0], args.block[1], args.block[2])
    shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    blocks = list(block_grid("acq", shape, grid))
    megabytes = volume.nbytes / 1e6
    settings = Settings().with_overrides(verify=False)  # what the edge flow encodes with
    with tempfile.TemporaryDirectory(prefix="emzip-pipeline-bench-") as scratch, prefect_test_harness(120):
        work = Path(scratch)
        write_slice_folder(volume, work / "microscope" / "acq")
        codec_encode_s, codec_decode_s, codec_bytes = _codec_alone(volume, blocks, settings)
        outbox, inbox = work / "edge" / "outbox", work / "datacenter" / "inbox"
        started, started_at = time.monotonic(), time.time()
        edge = acquisition_flow(
            acquisition=str(work / "microscope" / "acq"),
            outbox=str(outbox),
            transfer={"kind": "local", "destination": str(inbox)},
            layout="slices",
            block_shape=list(grid),
            settle_seconds=0.0,
            assume_complete=True,
        )
        edge_s, ended_at = time.monotonic() - started, time.time()
        if edge["progress"]["shipped"] != len(blocks):
            raise AssertionError(f"edge flow shipped {edge['progress']} of {len(blocks)} blocks")
        stages = _edge_stage_seconds(outbox, outbox / "ledger.sqlite")
        timeline = _edge_timeline(outbox / "ledger.sqlite", started_at, ended_at)
        restored_root = work / "datacenter" / "restored"
        started = time.monotonic()
        restore_on_dask = restore_flow.with_options(task_runner=dask_task_runner())
        restore = restore_on_dask(inbox=str(inbox), restored=str(restored_root))
        restore_wall = time.monotonic() - started
        identical = bool(np.array_equal(read_restored(restored_root / "acq.zarr"), volume))
    workers = os.environ.get("EMZIP_DASK_WORKERS") or os.cpu_count()
    rows = [
        ("codec alone: encode (train + code)", codec_encode_s),
        ("codec alone: decode", codec_decode_s),
        ("edge: read (TensorStore, slice TIFFs)", stages["read"]),
        ("edge: train + encode", stages["encode"]),
        ("edge: verify (verifier pool at low CPU priority, beside training; wall)", stages["verify"]),
        ("edge: ship (local backend, sha256 at the destination)", stages["ship"]),
        ("**edge end to end** (flow wall time)", edge_s),
        (f"restore phase ({workers} Dask workers)", restore["restore_seconds"]),
        ("restore flow wall time (cluster start included)", restore_wall),
    ]
    print(f"{name}: {shape} uint8, {megabytes:.1f} MB, {len(blocks)} blocks of {list(grid)}, {os.cpu_count()} cores")
    print(f"codec {8 * codec_bytes / volume.size:.3f} bits/voxel, edge {edge['bits_per_voxel']:.3f}\n")
    print("| stage | seconds | MB/s of acquisition |")
    print("|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {megabytes / max(seconds, 1e-9):.3f} |")
    print("\nwhere the edge's wall time went (ledger transition times):\n")
    print("| part of the edge run | seconds |")
    print("|---|---|")
    for label, seconds in timeline.items():
        print(f"| {label} | {seconds:.1f} |")
    print(f"| train + encode beyond the codec alone | {stages['encode'] - codec_encode_s:.1f} |")
    print(f"\nedge end to end / codec encode: {codec_encode_s / edge_s:.2f}x (target at least 0.8x)")
    print(f"restore phase / codec decode: {codec_decode_s / restore['restore_seconds']:.2f}x")
    print(f"restored volume identical to the acquisition: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
