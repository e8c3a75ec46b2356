"""Nothing lost, nothing overwritten, nothing hung (issue 25): acquisition identity, data-center
integrity, bounded decoding, retries. Each test here failed on the code before it."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bench.reliability import bombs, integrity
from flows.synthetic import em_like, write_inbox, write_slice_folder
from tasks.source.volumes import resolve_source
from tasks.store.ledger import Ledger, LedgerError
from tasks.store.names import UnsafeInputError

BLOCK = (4, 64, 64)


def test_two_acquisitions_in_folders_of_one_name_restore_to_two_volumes(prefect_api: str, tmp_path: Path) -> None:
    result = integrity.same_name_acquisitions(tmp_path)
    assert result["distinct_ids"], result
    assert result["identical"] == {"a": True, "b": True} and result["lost"] == 0


def test_a_volume_name_taken_by_another_acquisition_is_refused_before_anything_is_pruned(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.acquisition import acquisition_flow

    params = {
        "outbox": str(tmp_path / "outbox"),
        "transfer": {"kind": "local", "destination": str(tmp_path / "inbox")},
        "layout": "slices",
        "volume_name": "run1",  # the operator's name, twice
        "block_shape": list(BLOCK),
        "settle_seconds": 0.0,
        "assume_complete": True,
        "codec": {"steps": 0},
        "prune_raw": "delete",
    }
    first = tmp_path / "a" / "run1"
    write_slice_folder(em_like((4, 64, 64), seed=1), first)
    acquisition_flow(acquisition=str(first), **params)
    second = tmp_path / "b" / "run1"
    write_slice_folder(em_like((4, 64, 64), seed=2), second)
    with pytest.raises(LedgerError, match="belongs to another acquisition"):
        acquisition_flow(acquisition=str(second), **params)
    assert len(list(second.glob("*.tif"))) == 4  # nothing pruned


def test_a_copied_acquisition_folder_is_refused_while_the_original_exists(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "a" / "run1"
    write_slice_folder(em_like((2, 16, 16), seed=1), folder)
    original = resolve_source(folder, layout="slices")
    shutil.copytree(folder, tmp_path / "b" / "run1")  # the id file comes along
    copy = resolve_source(tmp_path / "b" / "run1", layout="slices")
    assert copy.name == original.name and original.acquisition and copy.acquisition
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.bind_volume(original.name, original.acquisition.id, original.acquisition.location)
        with pytest.raises(LedgerError, match="one is a copy"):
            ledger.bind_volume(copy.name, copy.acquisition.id, copy.acquisition.location)
        shutil.rmtree(folder)  # the original moved away: the same acquisition at its new place
        ledger.bind_volume(copy.name, copy.acquisition.id, copy.acquisition.location)


def test_a_folder_written_again_under_its_name_is_a_new_acquisition(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "run1"
    write_slice_folder(em_like((2, 16, 16), seed=1), folder)
    first = resolve_source(folder, layout="slices")
    assert resolve_source(folder, layout="slices").name == first.name  # stable while it exists
    shutil.rmtree(folder)
    write_slice_folder(em_like((2, 16, 16), seed=2), folder)
    assert resolve_source(folder, layout="slices").name != first.name


def test_an_old_ledger_is_upgraded_and_its_volumes_continue_under_their_names(tmp_path: Path) -> None:
    from flows.acquisition import bind_acquisition
    from tasks.source.grid import BlockRef
    from tasks.store.provenance import new_record, write_record

    folder = tmp_path / "run1"
    write_slice_folder(em_like((2, 16, 16), seed=1), folder)
    source = resolve_source(folder, layout="slices")
    path = tmp_path / "outbox" / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.discover([BlockRef("run1", 0, 2, 0, 16, 0, 16)])
    with sqlite3.connect(path) as raw:  # as a schema-1 ledger was: no volumes table
        raw.execute("DROP TABLE volumes")
        raw.execute("UPDATE meta SET value='1' WHERE key='schema'")
    record = new_record(
        BlockRef("run1", 0, 2, 0, 16, 0, 16),
        volume_shape=(2, 16, 16),
        block_shape=(2, 16, 16),
        dtype="|u1",
        voxel_size=None,
        units=None,
        source={"name": "run1", "layout": "slices", "location": source.location},
    )
    write_record(tmp_path / "outbox" / "run1" / "z0000_y0000_x0000.prov.json", record)
    with Ledger(path) as ledger:  # upgraded in place
        continued = bind_acquisition(ledger, source, tmp_path / "outbox", explicit=False)
        assert continued.name == "run1" and ledger.volume_binding("run1") is not None
        other = tmp_path / "elsewhere" / "run1"
        write_slice_folder(em_like((2, 16, 16), seed=2), other)
        stranger = resolve_source(other, layout="slices")
        assert bind_acquisition(ledger, stranger, tmp_path / "outbox", explicit=False).name == stranger.name
        with pytest.raises(LedgerError):
            bind_acquisition(ledger, resolve_source(other, "run1", "slices"), tmp_path / "outbox", explicit=True)


def test_convert_refuses_an_archive_of_another_acquisition(tmp_path: Path) -> None:
    import zarr

    from flows.cli import main

    day1, day2 = em_like((4, 64, 64), seed=1), em_like((4, 64, 64), seed=2)
    write_slice_folder(day1, tmp_path / "day1" / "run1")
    write_slice_folder(day2, tmp_path / "day2" / "run1")
    archive = tmp_path / "out.zarr"
    common = ["--layout", "slices", "--block", "4,64,64", "--effort", "0", "--quiet"]
    assert main(["convert", str(tmp_path / "day1" / "run1"), str(archive), *common]) == 0
    assert main(["convert", str(tmp_path / "day2" / "run1"), str(archive), *common]) == 2
    np.testing.assert_array_equal(zarr.open_array(str(archive / "0"), mode="r")[:], day1)


def test_convert_resumes_a_block_left_between_its_ledger_steps(tmp_path: Path) -> None:
    """A convert killed between 'encoded' and 'verified' (the ledger of the code before) resumes."""
    import zarr

    from codec import Settings
    from tasks.datacenter.convert import convert_volume, ledger_path

    volume = em_like((8, 64, 64), seed=3)
    write_slice_folder(volume, tmp_path / "run1")
    source = resolve_source(tmp_path / "run1", layout="slices", write_id=False)
    archive = tmp_path / "out.zarr"
    convert_volume(source, archive, Settings(steps=0), BLOCK)
    with Ledger(ledger_path(archive)) as ledger:
        block_id = f"{source.name}/z0004_y0000_x0000"
        with sqlite3.connect(ledger_path(archive)) as raw:
            raw.execute("UPDATE blocks SET state='encoded' WHERE block_id=?", (block_id,))
        assert ledger.get(block_id).state == "encoded"
    report = convert_volume(source, archive, Settings(steps=0), BLOCK)
    assert report.converted == 1
    np.testing.assert_array_equal(zarr.open_array(str(archive / "0"), mode="r")[:], volume)


def test_convert_killed_after_placing_a_chunk_resumes_to_an_identical_archive(tmp_path: Path) -> None:
    result = integrity.convert_killed_between_steps(tmp_path)
    assert result["killed"] and result["resumed"] and result["identical"], result


def test_records_that_disagree_with_a_restored_volume_are_refused_alone(prefect_api: str, tmp_path: Path) -> None:
    result = integrity.crafted_targets(tmp_path)
    assert result["overwritten_voxels"] == 0, result
    assert result["other_volume_restored"], result
    assert result["refused_alone"] == 3, result["reasons"]


def test_bombs_are_refused_in_under_a_second_and_100_mb(tmp_path: Path) -> None:
    outcomes = bombs.bomb_sweep(tmp_path)
    assert len(outcomes) == len(bombs.bombs()) + 1
    for outcome in outcomes:
        assert outcome.refused and outcome.typed, outcome
        assert outcome.seconds < 1.0 and outcome.peak_mb_above_baseline < 100, outcome


def test_original_dtype_must_be_heads_dtype_in_another_byte_order() -> None:
    from codec import Settings, compress, decompress
    from codec.errors import CorruptDataError

    big_endian = np.arange(24, dtype=">u2").reshape(2, 3, 4)
    restored = decompress(compress(big_endian, Settings(codec="lzma")))
    assert restored.dtype == np.dtype(">u2") and np.array_equal(restored, big_endian)
    with pytest.raises(CorruptDataError, match="another byte order"):
        decompress(bombs.original_dtype_bomb("|u1", np.uint16))


def test_decoded_size_limit_counts_bytes_and_is_settable(monkeypatch: pytest.MonkeyPatch) -> None:
    from codec import Settings, compress, decompress
    from codec.errors import EmzipError
    from codec.limits import ENVIRONMENT, LimitError

    data = compress(np.zeros((2, 8, 8), np.uint16), Settings(codec="lzma"))
    monkeypatch.setenv(ENVIRONMENT, "255")  # 256 bytes decoded
    with pytest.raises(LimitError, match="256 decoded bytes"):
        decompress(data)
    assert decompress(data, max_bytes=256).shape == (2, 8, 8)
    monkeypatch.setenv(ENVIRONMENT, "lots")
    with pytest.raises(EmzipError, match=ENVIRONMENT):
        decompress(data)


def test_a_damaged_container_is_refused_once_it_stopped_changing(tmp_path: Path) -> None:
    from tasks.datacenter.restoring import find_received

    inbox = tmp_path / "inbox"
    [container] = write_inbox(em_like((4, 16, 16), seed=1), (4, 16, 16), inbox, codec={"steps": 0})
    damaged = bytearray(container.read_bytes())
    damaged[-10] ^= 0xFF
    container.write_bytes(bytes(damaged))
    assert str(container) in find_received(inbox).waiting  # it may still be arriving
    refused = find_received(inbox, damaged_after=0).refused
    assert "damaged" in refused[str(container)]


def test_a_restored_block_arriving_again_with_other_data_is_refused(tmp_path: Path) -> None:
    from tasks.datacenter.restoring import find_received

    inbox = tmp_path / "inbox"
    [container] = write_inbox(em_like((4, 16, 16), seed=1), (4, 16, 16), inbox, codec={"steps": 0})
    record = json.loads(container.with_name(container.stem + ".prov.json").read_text())
    assert find_received(inbox, {"vol/z0000_y0000_x0000": (1, record["encoding"]["raw_sha256"])}).received == []
    scan = find_received(inbox, {"vol/z0000_y0000_x0000": (1, "0" * 64)})
    assert "already restored from other data" in scan.refused[str(container)]


def test_record_limits_newline_in_sha256_and_huge_volumes(tmp_path: Path) -> None:
    from tasks.store.validation import validate_record

    inbox = tmp_path / "inbox"
    [container] = write_inbox(em_like((4, 16, 16), seed=1), (4, 16, 16), inbox, codec={"steps": 0})
    path = container.with_name(container.stem + ".prov.json")
    record = json.loads(path.read_text())
    validate_record(record, path)
    for mutate in (
        lambda r: r["encoding"].update(raw_sha256=r["encoding"]["raw_sha256"] + "\n"),
        lambda r: r["volume"].update(shape=[1 << 31, 16, 16]),
    ):
        forged = json.loads(path.read_text())
        mutate(forged)
        with pytest.raises(UnsafeInputError):
            validate_record(forged, path)


def _grow(path: str, shape: tuple[int, int, int], barrier: multiprocessing.synchronize.Barrier) -> None:
    from tasks.datacenter.archive import open_archive

    barrier.wait()
    open_archive(Path(path), shape, np.dtype(np.uint8), (4, 4, 4), {})


def test_two_processes_growing_an_archive_keep_both_growths(tmp_path: Path) -> None:
    from tasks.datacenter.archive import open_archive

    context = multiprocessing.get_context("fork")
    for trial in range(12):
        archive = tmp_path / f"a{trial}.zarr"
        open_archive(archive, (4, 4, 4), np.dtype(np.uint8), (4, 4, 4), {})
        barrier = context.Barrier(2)
        workers = [
            context.Process(target=_grow, args=(str(archive), shape, barrier)) for shape in ((400, 4, 4), (4, 400, 4))
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert json.loads((archive / "zarr.json").read_text())["shape"] == [400, 400, 4], trial


def test_a_failed_edge_block_is_retried_and_emzip_retry_resets_any(tmp_path: Path) -> None:
    from flows.cli import main
    from tasks.source.grid import BlockRef

    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.discover([BlockRef("vol", 0, 4, 0, 4, 0, 4)])
        for _ in range(3):
            ledger.claim("w", limit=1)
            ledger.fail("vol/z0000_y0000_x0000", "w", "VolumeError: chunk damaged")
            ledger.retry_failed("vol", 3, "discovered")
        assert ledger.get("vol/z0000_y0000_x0000").state == "failed"  # three attempts: left for a person
        assert any("retry after: VolumeError" in (e["detail"] or "") for e in ledger.events("vol/z0000_y0000_x0000"))
    assert main(["retry", str(path), "--side", "edge"]) == 0
    with Ledger(path) as ledger:
        assert ledger.get("vol/z0000_y0000_x0000").state == "discovered"


def test_environment_settings_are_checked_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import restore
    from flows.dask_workers import SettingError

    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("EMZIP_DASK_WORKERS", bad)
        with pytest.raises(SettingError, match="EMZIP_DASK_WORKERS"):
            restore.default_blocks_per_task(10)
    monkeypatch.setenv("EMZIP_DASK_WORKERS", "3")
    assert restore.default_blocks_per_task(12) == 4


def test_an_edge_block_that_failed_on_a_damaged_file_ships_once_the_file_is_repaired(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.acquisition import acquisition_flow
    from flows.synthetic import write_slice

    volume = em_like((8, 64, 64), seed=9)
    folder = tmp_path / "run1"
    write_slice_folder(volume, folder)
    slice_file = sorted(folder.glob("*.tif"))[5]
    slice_file.write_bytes(slice_file.read_bytes()[:200])  # a damaged slice (a disk hiccup)
    params = {
        "acquisition": str(folder),
        "outbox": str(tmp_path / "outbox"),
        "transfer": {"kind": "local", "destination": str(tmp_path / "inbox")},
        "layout": "slices",
        "block_shape": list(BLOCK),
        "settle_seconds": 0.0,
        "assume_complete": True,
        "codec": {"steps": 0},
    }
    first = acquisition_flow(**params)
    assert first["progress"]["failed"] == 1 and first["progress"]["shipped"] == 1
    write_slice(folder, 5, volume[5])  # repaired
    second = acquisition_flow(**params)
    assert second["progress"]["failed"] == 0 and second["progress"]["shipped"] == 2
