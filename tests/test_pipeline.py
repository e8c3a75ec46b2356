"""The Prefect pipeline end to end, under one session-scoped Prefect test server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tasks.edge.coding
import tasks.edge.encoding
from codec.api import encode as real_encode
from flows.acquisition import acquisition_flow
from flows.demo import format_summary, read_restored, run_demo, run_pipeline
from flows.restore import restore_flow
from flows.synthetic import em_like, write_slice_folder
from tasks.store.ledger import Ledger
from tasks.store.provenance import load_record

REPO = Path(__file__).resolve().parents[1]
SHAPE = (8, 64, 128)
BLOCK = (4, 64, 64)  # 16384 voxels: large enough for the learned path
CODEC = {"steps": 40}


def _acquisition(root: Path, seed: int = 5) -> tuple[Path, np.ndarray]:
    volume = em_like(SHAPE, seed=seed)
    folder = root / "microscope" / "vol"
    write_slice_folder(volume, folder)
    return folder, volume


def _edge_params(tmp_path: Path, folder: Path, **overrides: Any) -> dict[str, Any]:
    """The edge flow's parameters for ``folder``'s 4 blocks, outbox and inbox under ``tmp_path``."""
    return {
        "acquisition": str(folder),
        "outbox": str(tmp_path / "outbox"),
        "transfer": {"kind": "local", "destination": str(tmp_path / "inbox")},
        "layout": "slices",
        "volume_name": "vol",
        "block_shape": list(BLOCK),
        "settle_seconds": 0.0,
        "assume_complete": True,
        **overrides,
    }


def _artifacts() -> dict[str, str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key: str(a.data) for a in client.read_artifacts() if a.key}


def _flagging_encode(encoding: threading.Event, before: Callable[[], None] = lambda: None) -> Callable[..., Any]:
    """The codec's ``encode``, with ``encoding`` set while it trains and encodes (``before`` runs first)."""

    def watching_encode(data: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        before()
        encoding.set()
        try:
            return real_encode(data, *args, **kwargs)
        finally:
            encoding.clear()

    return watching_encode


def test_demo_end_to_end_restores_identical_volume(prefect_api: str, tmp_path: Path) -> None:
    summary = run_demo(tmp_path, shape=SHAPE, block_shape=BLOCK, codec=CODEC, say=lambda *_: None)
    assert summary["identical"], summary
    assert summary["blocks"] == 4 and summary["restored"] == 4 and summary["failed"] == 0
    assert summary["shipped_first_scan"] == 2  # half-acquired: only the complete first layer
    assert 0 < summary["bits_per_voxel"] < 8
    assert 0 < summary["jpegxl_bits_per_voxel"] < 8 and summary["levels"] >= 1
    lines = format_summary(summary)
    assert f"JPEG-XL lossless (effort 7) {summary['jpegxl_bits_per_voxel']:.3f}" in lines  # the codec beside emzip
    assert "OME-Zarr 0.5 image" in lines and f"emzip view {summary['restored_path']}" in lines
    record = load_record(tmp_path / "datacenter" / "inbox" / "demo" / "z0000_y0000_x0000.prov.json")
    assert record["verification"]["ok"] is True
    assert record["encoding"]["codec"] in ("learned", "jpegxl")
    assert record["transfer"]["status"] == "SUCCEEDED"
    assert record["restore"]["verified_sha256"] == record["encoding"]["raw_sha256"]
    assert set(record["packages"]) >= {"emzip", "torch", "constriction", "tensorstore", "prefect"}
    assert record["prefect"]["flow_run_id"]
    artifacts = _artifacts()
    assert {"progress-demo", "blocks-demo", "summary-demo", "restore-summary"} <= set(artifacts)
    assert "data:image/png;base64," in artifacts["summary-demo"]  # the bitrate figure
    assert "`demo/z0000_y0000_x0000` | shipped" in artifacts["summary-demo"]  # the block table


def test_failed_verification_is_not_shipped_and_others_are(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, volume = _acquisition(tmp_path)
    bad_block = "vol/z0004_y0000_x0064"

    def corrupting_encode(data: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        result = real_encode(data, *args, **kwargs)
        if np.array_equal(data, volume[4:8, 0:64, 64:128]):
            wrong = data.copy()
            wrong[0, 0, 0] ^= 1  # a codec bug: a valid container of slightly different voxels
            bad = real_encode(wrong, *args, **kwargs)
            return type(result)(**{**result.__dict__, "data": bad.data})
        return result

    monkeypatch.setattr(tasks.edge.encoding, "encode", corrupting_encode)
    result = run_pipeline(folder, tmp_path, layout="slices", volume_name="vol", block_shape=BLOCK, codec=CODEC)
    edge = result["edge"]
    assert edge["progress"]["shipped"] == 3 and edge["progress"]["failed"] == 1
    [(block_id, reason)] = edge["failures"]
    assert block_id == bad_block and "differs from the raw block" in reason
    inbox = tmp_path / "datacenter" / "inbox" / "vol"
    assert not (inbox / "z0004_y0000_x0064.emz").exists()
    assert len(list(inbox.glob("*.emz"))) == 3
    restored = read_restored(tmp_path / "datacenter" / "restored" / "vol.zarr")
    np.testing.assert_array_equal(restored[:4], volume[:4])


def test_a_batch_ships_while_the_next_block_trains(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.transfer._local import LocalTransfer

    folder, _ = _acquisition(tmp_path, seed=6)
    encoding = threading.Event()  # set while a block trains and encodes
    overlapped: list[bool] = []
    first_batch: list[str] = []
    lock = threading.Lock()  # two batches may start at once: only the first one waits
    real_transfer = LocalTransfer.transfer

    def slow_transfer(self: LocalTransfer, batch: Any, submission_id: str) -> Any:
        with lock:
            first = not first_batch and not batch.batch_id.endswith("-provenance")
            if first:
                first_batch.append(batch.batch_id)
        if first:  # shipping in the flow's thread: no block can train while this waits
            overlapped.append(encoding.wait(timeout=60))
        return real_transfer(self, batch, submission_id)

    # The second block's encode waits for the first block's verification, so the first batch is
    # ready to ship before the third block trains however long the verifiers take to start.
    verified_one = threading.Event()
    encodes: list[int] = []
    real_verify = tasks.edge.coding.verify_container

    def watching_verify(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_verify(*args, **kwargs)
        finally:
            verified_one.set()

    def second_waits_for_a_verification() -> None:
        encodes.append(1)
        if len(encodes) == 2:
            verified_one.wait(timeout=60)

    monkeypatch.setattr(LocalTransfer, "transfer", slow_transfer)
    monkeypatch.setattr(tasks.edge.encoding, "encode", _flagging_encode(encoding, second_waits_for_a_verification))
    monkeypatch.setattr(tasks.edge.coding, "verify_container", watching_verify)
    edge = acquisition_flow(**_edge_params(tmp_path, folder, codec=CODEC, batch_size=1))
    assert overlapped == [True], "the first transfer held up training"
    assert edge["progress"]["shipped"] == 4 and edge["progress"]["failed"] == 0
    assert len(list((tmp_path / "inbox" / "vol").glob("*.emz"))) == 4


def test_the_first_block_decides_alone_then_blocks_code_side_by_side(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = _acquisition(tmp_path, seed=7)
    lock = threading.Lock()
    running: list[int] = [0]
    seen: list[tuple[int, bool]] = []  # (encodes running, coded with the acquisition's model)

    def counting_encode(data: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            seen.append((running[0], kwargs.get("shared") is not None))
        try:
            time.sleep(0.3)  # long enough for the other worker's block to start meanwhile
            return real_encode(data, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(tasks.edge.encoding, "encode", counting_encode)
    # learned on every block: a model to share
    edge = acquisition_flow(**_edge_params(tmp_path, folder, codec={"steps": 40, "codec": "learned"}, workers=2))
    assert edge["progress"]["shipped"] == 4 and edge["workers"] == 2
    assert seen[0] == (1, False)  # the first block decides the model, alone
    assert all(with_model for _, with_model in seen[1:]), seen  # every later block gets it
    assert max(count for count, _ in seen) == 2, seen  # two workers coding at once
    records = sorted((tmp_path / "outbox" / "vol").glob("*.prov.json"))
    assert len(records) == 4 and all(load_record(r)["timings_s"]["read"] > 0 for r in records)


_RUN_FLOW = """
import json, sys
from flows.acquisition import acquisition_flow
acquisition_flow(**json.loads(sys.argv[1]))
"""


def test_killed_flow_resumes_without_reencoding_or_duplicates(prefect_api: str, tmp_path: Path) -> None:
    folder, volume = _acquisition(tmp_path, seed=9)
    outbox, inbox = tmp_path / "edge" / "outbox", tmp_path / "datacenter" / "inbox"
    params = {
        "acquisition": str(folder),
        "outbox": str(outbox),
        "transfer": {"kind": "local", "destination": str(inbox)},
        "layout": "slices",
        "volume_name": "vol",
        "block_shape": list(BLOCK),
        "settle_seconds": 0.0,
        "assume_complete": True,
        "codec": {"steps": 150},
        "batch_size": 2,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _RUN_FLOW, json.dumps(params)],
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ledger_path = outbox / "ledger.sqlite"
    deadline = time.monotonic() + 240
    encoded_before_kill: set[str] = set()
    while time.monotonic() < deadline and process.poll() is None:
        if ledger_path.exists():
            with Ledger(ledger_path) as ledger:
                encoded_before_kill = {
                    r.block_id for r in ledger.blocks() if r.state in ("encoded", "verified", "shipped")
                }
            if encoded_before_kill:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert encoded_before_kill, "the flow was killed before it encoded anything"
    with Ledger(ledger_path) as ledger:
        assert ledger.progress()["shipped"] < 4, "the kill came too late to test resuming"
    acquisition_flow(**params)
    with Ledger(ledger_path) as ledger:
        assert ledger.progress()["shipped"] == 4
        for record in ledger.blocks():
            # transitions only (a take-over of a dead worker's claim is logged as state -> same state)
            states = [e["to_state"] for e in ledger.events(record.block_id) if e["from_state"] != e["to_state"]]
            assert states.count("encoded") == 1, (record.block_id, states)
            assert states.count("shipped") == 1, (record.block_id, states)
    assert sorted(p.name for p in (inbox / "vol").glob("*.emz")) == [
        "z0000_y0000_x0000.emz",
        "z0000_y0000_x0064.emz",
        "z0004_y0000_x0000.emz",
        "z0004_y0000_x0064.emz",
    ]
    assert not list(inbox.rglob("*.part"))
    restore_flow(inbox=str(inbox), restored=str(tmp_path / "datacenter" / "restored"))
    np.testing.assert_array_equal(read_restored(tmp_path / "datacenter" / "restored" / "vol.zarr"), volume)


def test_transient_transfer_failure_keeps_blocks_verified_for_the_next_run(prefect_api: str, tmp_path: Path) -> None:
    folder, volume = _acquisition(tmp_path, seed=13)
    blocked = tmp_path / "datacenter-unreachable"
    blocked.write_text("a file where the destination folder should be: every copy fails")
    params = {
        "acquisition": str(folder),
        "outbox": str(tmp_path / "edge" / "outbox"),
        "transfer": {"kind": "local", "destination": str(blocked / "inbox")},
        "layout": "slices",
        "volume_name": "vol",
        "block_shape": [4, 64, 96],  # x 96-128 are edge blocks, 32 wide
        "settle_seconds": 0.0,
        "assume_complete": True,
        "codec": {"steps": 20},
        "transfer_retries": 0,
        "batch_size": 2,  # batches ship inside the loop: a failed one must not be claimed again this run
    }
    first = acquisition_flow(**params)
    assert first["progress"]["verified"] == 4 and first["progress"]["shipped"] == 0
    blocked.unlink()
    second = acquisition_flow(**{**params, "prune_outbox": "delete"})
    assert second["progress"]["shipped"] == 4 and not second["failures"]
    with Ledger(tmp_path / "edge" / "outbox" / "ledger.sqlite") as ledger:
        for record in ledger.blocks():
            events = ledger.events(record.block_id)
            assert [e["to_state"] for e in events].count("encoded") == 1
            assert any("destination sha256 confirmed" in (e["detail"] or "") for e in events)
    outbox = tmp_path / "edge" / "outbox" / "vol"
    assert not list(outbox.glob("*.emz"))  # pruned after the destination confirmed them
    assert len(list(outbox.glob("*.prov.json"))) == 4  # records carry the transfer now: kept
    records = [load_record(p) for p in outbox.glob("*.prov.json")]
    assert {tuple(r["volume"]["block_shape"]) for r in records} == {(4, 64, 96)}  # the grid, even for edge blocks
    restore_flow(inbox=str(blocked / "inbox"), restored=str(tmp_path / "restored"))
    np.testing.assert_array_equal(read_restored(tmp_path / "restored" / "vol.zarr"), volume)
    metadata = json.loads((tmp_path / "restored" / "vol.zarr" / "0" / "zarr.json").read_text())  # level 0
    assert metadata["chunk_grid"]["configuration"]["chunk_shape"] == [4, 64, 96]  # one shard per block


def test_serve_registers_scheduled_and_triggered_deployments(prefect_api: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    (tmp_path / "acquisitions").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", str(tmp_path / "acquisitions"), "--workdir", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, found = time.monotonic() + 120, {}
        while time.monotonic() < deadline and len(found) < 3:
            with get_client(sync_client=True) as client:
                found = {
                    d.name: d
                    for d in client.read_deployments()
                    if d.name in ("edge-acquisition", "datacenter-restore", "flight-check")
                }
            time.sleep(1)
        assert set(found) == {"edge-acquisition", "datacenter-restore", "flight-check"}
        edge = found["edge-acquisition"]
        assert edge.schedules and edge.parameters["acquisition_root"] == str(tmp_path / "acquisitions")
        with get_client(sync_client=True) as client:
            automations = {a.name for a in client.read_automations()}
        assert any("edge-acquisition" in name for name in automations)  # the event trigger
        assert any("datacenter-restore" in name for name in automations)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
