"""Hostile input, kill -9 at every step, full disks, ledger load and fuzz (the sweeps of bench/reliability.py).

CI runs a sample of the kill points and disk sites; ``EMZIP_RELIABILITY_FULL=1`` runs them all
(``python -m bench.reliability --full`` prints the table of docs/operations.md from the same code).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import numpy as np
import pytest

import tasks.store.atomic
from bench import reliability
from tasks.source.volumes import VolumeError, resolve_source
from tasks.store.atomic import atomic_write_bytes, remove_abandoned_temporaries
from tasks.store.diskspace import out_of_space
from tasks.store.failpoints import POINTS
from tasks.store.ledger import Ledger
from tasks.store.names import UnsafeInputError, check_volume_name, inside

FULL = os.environ.get("EMZIP_RELIABILITY_FULL") == "1"
FULL_ONLY = "a sample runs in CI; EMZIP_RELIABILITY_FULL=1 (or python -m bench.reliability --full) runs every one"
DISK_SAMPLE = ("outbox", "restored volume")


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    return reliability.write_acquisition(tmp_path_factory.mktemp("template"))


def test_crafted_inbox_records_are_refused_reported_and_left_in_place(prefect_api: str, tmp_path: Path) -> None:
    result = reliability.crafted_inbox(tmp_path)
    assert result["tried"] >= 25
    assert result["not_refused"] == [], result["reasons"]
    assert result["outside_root"] == 0 and result["restored_crafted"] == 0
    assert result["left_in_place"] == result["tried"]
    assert result["good_restored"]  # the genuine block beside them still restores
    reasons = result["reasons"]
    assert "is not allowed" in reasons["absolute volume name"]
    assert "does not match its bounds" in reasons["id lies about bounds"]
    assert "outside the volume shape" in reasons["bounds outside volume"]
    assert "outside" in reasons["folder symlinked out of the inbox"]
    with Ledger(tmp_path / "datacenter" / "restored" / "ledger.sqlite") as ledger:
        assert len(ledger.refusals()) == result["tried"]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts() if a.key}
    assert "refused-files" in keys


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_every_step_resumes_exactly_once(
    prefect_api: str, tmp_path: Path, acquisition: tuple[Path, np.ndarray], point: str
) -> None:
    if not FULL and point not in reliability.SAMPLE_POINTS:
        pytest.skip(FULL_ONLY)
    template, volume = acquisition
    outcome = reliability.kill_point(tmp_path, template, volume, point)
    assert outcome.killed, f"{point} was never reached"
    assert outcome.ok, outcome


@pytest.mark.parametrize("site", reliability.SITES)
def test_full_disk_keeps_blocks_retryable_and_leaves_nothing_partial(
    prefect_api: str, tmp_path: Path, acquisition: tuple[Path, np.ndarray], site: str
) -> None:
    if not FULL and site not in DISK_SAMPLE:
        pytest.skip(FULL_ONLY)
    if not reliability.can_mount_small_filesystem():
        pytest.skip("this machine does not allow mounting a small tmpfs (test_quota_exceeded_* injects the errno)")
    template, volume = acquisition
    outcome = reliability.out_of_space_site(tmp_path, template, volume, site)
    assert outcome.ok, outcome


def test_quota_exceeded_names_the_file_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_quota(descriptor: int) -> None:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(tasks.store.atomic.os, "fsync", no_quota)  # the errno, at the file-writing seam
    target = tmp_path / "outbox" / "vol" / "z0000_y0000_x0000.emz"
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(target, b"container bytes")
    assert caught.value.errno == errno.EDQUOT and str(target) in str(caught.value)
    assert "quota" in str(caught.value).lower()
    assert out_of_space(caught.value)
    assert list(target.parent.iterdir()) == []  # no partial file, no temporary


def test_abandoned_temporaries_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "block.emz"
    abandoned = tmp_path / ".block.emz.dead.part"
    abandoned.write_bytes(b"half a copy from a killed writer")
    live = tmp_path / ".block.emz.live.part"
    with live.open("wb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # a writer still at work
        assert remove_abandoned_temporaries(target) == [abandoned]
        assert live.exists()
    atomic_write_bytes(target, b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block.emz"]


def test_names_from_folders_are_checked_at_the_edge(tmp_path: Path) -> None:
    folder = tmp_path / "run 42"
    folder.mkdir()
    with pytest.raises(VolumeError, match="pass a volume name explicitly"):
        resolve_source(folder, layout="slices")
    assert resolve_source(folder, name="run42", layout="slices").name == "run42"
    for bad in ("/abs", "..", "a/b", ".hidden", "x\n", "", "a" * 129, "a..b"):
        with pytest.raises(UnsafeInputError):
            check_volume_name(bad, "test")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeInputError, match="outside"):
        inside(tmp_path / "root", "link", "x.zarr")
    assert inside(tmp_path / "root", "vol.zarr") == (tmp_path / "root" / "vol.zarr").resolve()


def test_processes_claiming_from_one_ledger_never_share_or_lose_a_block(tmp_path: Path) -> None:
    result = reliability.ledger_load(tmp_path, workers=4, blocks=4000 if FULL else 1000)
    assert result["claims"] == result["blocks"]
    assert result["double_claims"] == 0 and result["lost"] == 0 and result["unclaimed_left"] == 0


def test_fuzzed_containers_and_records_give_typed_errors_never_wrong_data(tmp_path: Path) -> None:
    result = reliability.fuzz(tmp_path, containers=3000 if FULL else 300, records=3000 if FULL else 300, seed=1)
    assert result["wrong_data"] == 0
    assert result["untyped"] == []
    assert result["records_refused"] > 0 and result["records_accepted"] > 0  # the fuzz reaches both sides


def test_a_record_still_arriving_waits_and_a_forged_one_is_refused(tmp_path: Path) -> None:
    from bench.reliability.crafted import good_block
    from tasks.datacenter.restoring import find_received

    inbox = tmp_path / "inbox"
    container, _, _ = good_block(inbox)
    record_path = container.with_name(container.stem + ".prov.json")
    complete = record_path.read_bytes()
    record_path.write_bytes(complete[: len(complete) // 2])  # a transfer writing in place
    scan = find_received(inbox)
    assert not scan.received and not scan.refused
    assert "not complete JSON" in scan.waiting[str(container)]
    record_path.write_bytes(complete)
    scan = find_received(inbox)
    assert [r.block.block_id for r in scan.received] == ["vol/z0000_y0000_x0000"]
    record_path.write_text(complete.decode().replace('"volume": "vol"', '"volume": "/etc"', 1))
    scan = find_received(inbox)
    assert not scan.received and "is not allowed" in scan.refused[str(container)]
