"""The edge and ``emzip convert`` scale with their workers (issue 36).

The acquisition's model is decided once and reused bit-exactly; a block whose content changed is
decided again and says why. Two Dask workers restore an identical volume, each block verified in
a process other than the one that coded it, every block after the first coded with the model of
the first. A convert worker killed mid-block is replaced and the archive is identical. The edge's
worker faults (``bench.reliability.workers``) lose nothing and record nothing twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.reliability.workers import WORKER_FAULTS, worker_fault
from codec import decompress, inspect
from codec.api import encode
from codec.settings import Settings
from flows.synthetic import em_like, write_slice_folder

BLOCK = (4, 64, 64)


def test_later_blocks_are_coded_with_the_acquisition_model_bit_exactly() -> None:
    volume = em_like((12, 64, 64), seed=360)
    settings = Settings(steps=40, verify=False)
    first = encode(volume[:4], settings, codec="learned")
    assert first.codec == "learned" and first.shared is not None
    for z in (4, 8):
        block = np.ascontiguousarray(volume[z : z + 4])
        later = encode(block, settings, codec="learned", shared=first.shared)
        assert later.reason.startswith("acquisition model"), later.reason
        assert later.shared is first.shared and later.training is not None and later.training.steps == 0
        assert inspect(later.data).config["training"]["acquisition_model"] is True
        np.testing.assert_array_equal(decompress(later.data), block)


def test_a_block_whose_content_changed_is_decided_again_and_says_why() -> None:
    volume = em_like((8, 64, 64), seed=361)
    settings = Settings(steps=40, verify=False)
    first = encode(volume[:4], settings, codec="learned")
    assert first.shared is not None
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (4, 64, 1))  # resin: a ramp, nothing like cells
    again = encode(smooth, settings, shared=first.shared)
    assert "acquisition model no longer fits" in again.reason and "decided again" in again.reason, again.reason
    np.testing.assert_array_equal(decompress(again.data), smooth)


def test_two_dask_workers_restore_an_identical_volume(prefect_api: str, tmp_path: Path) -> None:
    from flows.demo import read_restored, run_pipeline

    volume = em_like((8, 64, 256), seed=362)
    write_slice_folder(volume, tmp_path / "microscope" / "vol")
    result = run_pipeline(
        tmp_path / "microscope" / "vol", tmp_path / "site", layout="slices", volume_name="vol", block_shape=BLOCK,
        codec={"steps": 40, "codec": "learned"}, workers=2,
    )  # fmt: skip
    timing = result["timing"]
    assert timing["workers"] == 2 and timing["blocks"] == 8 and timing["megabytes"] == pytest.approx(0.131, abs=1e-3)
    assert not result["missing"]
    np.testing.assert_array_equal(read_restored(tmp_path / "site" / "datacenter" / "restored" / "vol.zarr"), volume)
    records = [
        json.loads(p.read_text()) for p in sorted((tmp_path / "site" / "edge" / "outbox" / "vol").glob("*.prov.json"))
    ]
    assert len(records) == 8
    coders = set()
    for record in records:
        coder = record["encoding"]["process"].split()[1]
        verifier = record["verification"]["process"].split("pid ")[1].split(",")[0]
        assert coder != verifier, record["verification"]["process"]  # verified by another process
        coders.add(coder)
    reasons = [r["encoding"]["reason"] for r in records]
    assert sum(not r.startswith("acquisition model") for r in reasons) == 1, reasons  # only the first decided
    assert len(coders) == 2, coders  # both workers coded blocks, with the model that reached them


def test_convert_on_two_workers_survives_a_killed_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zarr

    from tasks.datacenter.convert import convert_volume, ledger_path
    from tasks.datacenter.convert_pool import DaskPool
    from tasks.source.volumes import resolve_source
    from tasks.store.failpoints import ARMED, ENVIRONMENT, ONCE
    from tasks.store.ledger import Ledger

    volume = em_like((8, 64, 256), seed=363)
    write_slice_folder(volume, tmp_path / "run1")
    source = resolve_source(tmp_path / "run1", layout="slices", write_id=False)
    monkeypatch.setenv(ENVIRONMENT, "convert.coded#2")  # the second block a worker codes: after the model
    monkeypatch.setenv(ARMED, "1")
    monkeypatch.setenv(ONCE, str(tmp_path / "killed-once"))
    pool = DaskPool(workers=2)  # its workers inherit the armed environment
    assert pool.width == 2  # up before the first block: only the deciding block is converted in this process
    try:
        report = convert_volume(source, tmp_path / "out.zarr", Settings(steps=40, codec="learned"), BLOCK, pool=pool)
    finally:
        pool.close()
    assert (tmp_path / "killed-once").exists(), "no worker was killed: the test did not test anything"
    assert report.converted == 8 and not report.missing
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr" / "0"), mode="r")[...], volume)
    with Ledger(ledger_path(tmp_path / "out.zarr")) as ledger:
        records = ledger.blocks(source.name)
        assert len(records) == 8 and all(r.state == "verified" and r.version == 1 for r in records)


@pytest.mark.parametrize("case", WORKER_FAULTS)
def test_edge_worker_faults_lose_nothing_and_record_nothing_twice(prefect_api: str, tmp_path: Path, case: str) -> None:
    """A worker SIGKILLed mid-block, the coordinator SIGKILLed, a worker whose outbox writes fail
    (retired, its blocks coded by the other) and an outbox no worker can write (the run stops,
    says why, and the next completes): each ends with the source restored, every block once."""
    outcome = worker_fault(tmp_path, case)
    assert outcome.fired, f"the fault did not happen: the test did not test anything ({outcome.said})"
    assert outcome.ok, outcome
    if "outbox" in case:
        assert "Input/output error" in outcome.said and ".emz" in outcome.said, outcome.said  # names the file
    if case == WORKER_FAULTS[3]:  # nobody can write the outbox: nobody is retired, the run stops
        assert "the flow cannot write it either" in outcome.said, outcome.said
