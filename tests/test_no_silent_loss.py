"""No silent loss (issue 31): every case ends with the source's data or a loud failure naming the blocks.

Each test here failed on f6e212c (the main before it): a restored volume or archive that differs
from the source, with exit code 0 and nothing said.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bench.reliability import silent
from tasks.source.grid import BlockRef
from tasks.store.ledger import Ledger


def test_a_growing_acquisition_run_twice_restores_every_slice(prefect_api: str, tmp_path: Path) -> None:
    outcome = silent.growth_cli(tmp_path)
    assert outcome.differing_voxels == 0 and not outcome.loud, outcome


def test_a_completion_marker_written_early_then_more_slices_restores_every_slice(
    prefect_api: str, tmp_path: Path
) -> None:
    outcome = silent.growth_marker(tmp_path)
    assert outcome.differing_voxels == 0 and not outcome.loud, outcome


def test_a_grown_tail_is_shipped_as_version_2_and_provenance_keeps_version_1(prefect_api: str, tmp_path: Path) -> None:
    silent.growth_cli(tmp_path)
    tail = "z0008_y0000_x0000"
    with Ledger(tmp_path / "edge" / "outbox" / "ledger.sqlite") as ledger:
        record = ledger.get(f"{silent.NAME}/{tail}")
        history = ledger.versions(record.block_id)
    assert record.version == 2 and record.state == "shipped" and record.block.z1 == 16
    assert [h["version"] for h in history] == [1] and "slices 10-15 added" in history[0]["reason"]
    inbox = tmp_path / "datacenter" / "inbox" / silent.NAME
    assert (inbox / f"{tail}.emz").is_file() and (inbox / f"{tail}.v2.emz").is_file()  # v1 never overwritten
    record_v2 = json.loads((inbox / f"{tail}.v2.prov.json").read_text())
    assert record_v2["block"]["version"] == 2 and record_v2["supersedes"][0]["version"] == 1
    with Ledger(tmp_path / "datacenter" / "restored" / "ledger.sqlite") as ledger:
        assert ledger.get(record.block_id).version == 2


def test_convert_of_a_grown_source_rewrites_the_tail_at_every_level(tmp_path: Path) -> None:
    outcome = silent.growth_convert(tmp_path)
    assert outcome.differing_voxels == 0 and outcome.details["level_one_differing"] == 0, outcome
    assert len(outcome.details["recoded"]) == 2


def test_a_changed_slice_is_coded_again_with_a_warning(prefect_api: str, tmp_path: Path) -> None:
    outcome = silent.changed_slice(tmp_path)
    assert outcome.differing_voxels == 0, outcome
    assert outcome.details["recoded"] == [f"{silent.NAME}/z0000_y0000_x0000", f"{silent.NAME}/z0000_y0000_x0064"]


def test_a_changed_slice_with_raw_pruning_ships_the_new_data_before_any_slice_goes(
    prefect_api: str, tmp_path: Path
) -> None:
    outcome = silent.changed_slice(tmp_path, prune_raw="delete")
    assert outcome.differing_voxels == 0, outcome
    assert outcome.details["slices_left"] == 0  # every block shipped as it is now, then pruned


def test_a_changed_slice_can_be_refused_naming_the_slices(prefect_api: str, tmp_path: Path) -> None:
    outcome = silent.changed_slice_refused(tmp_path)
    assert outcome.loud and "slices 0-7 changed" in outcome.said and "z0000_y0000_x0000" in outcome.said, outcome


def test_a_touched_but_unchanged_slice_is_not_coded_again(tmp_path: Path) -> None:
    import os

    from flows.synthetic import em_like, write_slice_folder
    from tasks.source.revisions import find_revisions, raw_stamp
    from tasks.source.volumes import open_volume, resolve_source

    folder = tmp_path / "vol"
    write_slice_folder(em_like((4, 16, 16), seed=3), folder)
    volume = open_volume(resolve_source(folder, "vol", "slices"))
    block = BlockRef("vol", 0, 4, 0, 16, 0, 16)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.discover([block])
        worker = "w"
        ledger.claim(worker, volume="vol")
        from tasks.store.checksums import array_sha256

        sha = array_sha256(volume.read(block.bounds))
        ledger.advance(block.block_id, worker, "encoded", raw_sha256=sha, raw_stamp=raw_stamp(volume, block))
        os.utime(folder / "slice_00002.tif", ns=(1, 1))  # a touch: new time, same bytes
        revisions, renew = find_revisions(volume, ledger.blocks("vol"), {block.block_id: block})
    assert revisions == [] and block.block_id in renew


def test_convert_refuses_a_recreated_source_and_leaves_the_archive_untouched(tmp_path: Path) -> None:
    outcome = silent.recreated_source(tmp_path)
    assert outcome.loud and outcome.details["archive_untouched"], outcome
    assert "differ" in outcome.said and "z0000_y0000_x0000" in outcome.said


def test_convert_resumes_from_a_byte_identical_copy_elsewhere(tmp_path: Path) -> None:
    outcome = silent.copy_resumed(tmp_path)
    assert outcome.differing_voxels == 0 and outcome.details.get("resumed"), outcome
    assert outcome.details["before"] == 2


def test_a_damaged_delivery_is_delivered_again_and_restored(prefect_api: str, tmp_path: Path) -> None:
    outcome = silent.damaged_delivery(tmp_path, permanent=False)
    assert outcome.differing_voxels == 0 and not outcome.loud, outcome
    assert outcome.details["incomplete_attributes"] is True and not outcome.details["refused"]


def test_a_permanently_damaged_delivery_is_refused_loudly_and_the_image_says_incomplete(
    prefect_api: str, tmp_path: Path
) -> None:
    outcome = silent.damaged_delivery(tmp_path, permanent=True)
    assert outcome.loud and "damaged" in outcome.said, outcome
    assert outcome.details["incomplete_attributes"] is False


def test_emzip_run_exits_non_zero_naming_blocks_the_data_center_refused(
    prefect_api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main
    from flows.synthetic import em_like, write_slice_folder

    folder = tmp_path / "run1"
    write_slice_folder(em_like((8, 64, 64), seed=4), folder)
    taken = tmp_path / "dest" / "datacenter" / "restored" / "vol.zarr"  # a target of another dtype holds the name
    taken.mkdir(parents=True)
    (taken / "zarr.json").write_text(
        json.dumps(
            {
                "zarr_format": 3,
                "node_type": "array",
                "shape": [8, 64, 64],
                "data_type": "uint16",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [8, 64, 64]}},
                "chunk_key_encoding": {"name": "default"},
                "fill_value": 0,
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            }
        )
    )
    code = main(["run", str(folder), "--dest", str(tmp_path / "dest"), "--block", "8,64,64", "--name", "vol"])
    err = capsys.readouterr().err
    assert code == 1 and "vol/z0000_y0000_x0000" in err and "uint16" in err and "emzip retry" in err


def test_convert_of_a_npy_file_is_refused_as_a_file_of_an_unsupported_kind(tmp_path: Path) -> None:
    from flows.cli import main

    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 4, 4), np.uint8))
    assert main(["convert", str(path), str(tmp_path / "out.zarr")]) == 2
    assert not (tmp_path / "out.zarr").exists()


def test_a_schema_3_ledger_opens_and_gains_versions(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.discover([BlockRef("vol", 0, 4, 0, 8, 0, 8)])
    connection = sqlite3.connect(path)  # back to what schema 3 wrote: no version columns, no history table
    connection.execute("ALTER TABLE blocks DROP COLUMN version")
    connection.execute("ALTER TABLE blocks DROP COLUMN raw_stamp")
    connection.execute("DROP TABLE block_versions")
    connection.execute("UPDATE meta SET value='3' WHERE key='schema'")
    connection.commit()
    connection.close()
    with Ledger(path) as ledger:
        record = ledger.get("vol/z0000_y0000_x0000")
        assert record.version == 1 and record.raw_stamp is None
        assert ledger.supersede(BlockRef("vol", 0, 4, 0, 8, 0, 8), "test") == 2


def test_emzip_run_refusing_a_changed_slice_prints_one_clean_error_without_a_traceback(
    prefect_api: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main
    from flows.synthetic import em_like, write_slice, write_slice_folder

    folder = tmp_path / "run1"
    write_slice_folder(em_like((8, 64, 64), seed=4), folder)
    base = ["run", str(folder), "--dest", str(tmp_path / "dest"), "--block", "8,64,64", "--name", "vol"]
    assert main([*base, "--effort", "0"]) == 0
    write_slice(folder, 3, em_like((8, 64, 64), seed=5)[3])
    capfd.readouterr()
    assert main([*base, "--effort", "0", "--on-change", "refuse"]) == 2
    err = capfd.readouterr().err
    assert "emzip run: " in err and "slices 0-7 changed" in err and "Traceback" not in err


def test_a_failed_read_names_the_file_and_not_the_tensorstore_spec(tmp_path: Path) -> None:
    from flows.synthetic import em_like, write_slice_folder
    from tasks.source.volumes import VolumeError, open_volume, resolve_source

    folder = tmp_path / "vol"
    paths = write_slice_folder(em_like((3, 32, 32), seed=3), folder)
    volume = open_volume(resolve_source(folder, "vol", "slices"))
    paths[1].write_bytes(paths[1].read_bytes()[:100])  # a damaged slice
    with pytest.raises(VolumeError) as caught:
        volume.read(((0, 3), (0, 32), (0, 32)))
    message = str(caught.value)
    assert message.startswith(str(paths[1])) and "tensorstore_spec" not in message and len(message) < 400, message


def test_outbox_pruning_covers_blocks_shipped_by_earlier_runs(prefect_api: str, tmp_path: Path) -> None:
    from flows.synthetic import em_like, write_slice_folder

    folder = tmp_path / "microscope" / silent.NAME
    write_slice_folder(em_like((8, 64, 128), seed=6), folder)
    silent._pipeline(tmp_path, folder)  # pruning off: the outbox keeps its copies
    outbox = tmp_path / "edge" / "outbox" / silent.NAME
    assert len(list(outbox.glob("*.emz"))) == 2
    from flows.acquisition import acquisition_flow

    acquisition_flow(
        acquisition=str(folder),
        outbox=str(tmp_path / "edge" / "outbox"),
        transfer={"kind": "local", "destination": str(tmp_path / "datacenter" / "inbox")},
        layout="slices",
        volume_name=silent.NAME,
        block_shape=list(silent.BLOCK),
        settle_seconds=0.0,
        assume_complete=True,
        prune_outbox="delete",
    )
    assert (
        list(outbox.glob("*.emz")) == []
        and len(list((tmp_path / "datacenter" / "inbox" / silent.NAME).glob("*.emz"))) == 2
    )
