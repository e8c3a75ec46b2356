"""emzip as a zarr v3 codec (codec/zarr_codec.py) and the data center's archive target (tasks/datacenter/archive.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from codec.errors import EmzipError
from codec.settings import Settings
from codec.zarr_codec import EmzipCodec
from flows.synthetic import em_like, write_inbox
from tasks.datacenter.archive import chunk_path, place_block
from tasks.datacenter.destination import RestoreError
from tasks.source.grid import block_grid
from tasks.store.checksums import array_sha256, file_sha256

SERIALIZER = {"name": "emzip", "configuration": {"settings": {"steps": 5}}}


def _array(path: Path, data: np.ndarray, chunks: tuple[int, int, int]) -> zarr.Array:
    array = zarr.create_array(
        str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, serializer=SERIALIZER, compressors=None
    )
    array[:] = data
    return array


def test_zarr_writes_and_reads_emzip_arrays_across_chunk_borders_and_edges(tmp_path: Path) -> None:
    volume = em_like((6, 70, 90), seed=4)  # chunks (4, 64, 64): edge chunks on every axis
    _array(tmp_path / "a.zarr", volume, (4, 64, 64))
    reopened = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    assert isinstance(reopened.metadata.codecs[0], EmzipCodec)
    np.testing.assert_array_equal(reopened[:], volume)
    np.testing.assert_array_equal(reopened[3:6, 60:70, 10:90], volume[3:6, 60:70, 10:90])  # across borders
    np.testing.assert_array_equal(reopened[5, 69, 89], volume[5, 69, 89])


def test_wider_dtypes_take_the_classic_fallback(tmp_path: Path) -> None:
    volume = (em_like((3, 40, 40), seed=5).astype(np.uint16) * 257) ^ 3
    _array(tmp_path / "u16.zarr", volume, (3, 32, 32))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "u16.zarr"), mode="r")[:], volume)


def test_codec_json_round_trips_and_a_fresh_interpreter_finds_the_codec(tmp_path: Path) -> None:
    codec = EmzipCodec(settings={"steps": 7, "family": "laplace"})
    again = EmzipCodec.from_dict(codec.to_dict())
    assert again == codec and hash(again) == hash(codec)
    assert dict(again.settings) == Settings(steps=7, family="laplace").to_json()
    with pytest.raises(ValueError, match="invalid settings"):
        EmzipCodec(settings={"no_such_setting": 1})
    volume = em_like((2, 32, 32), seed=6)
    _array(tmp_path / "b.zarr", volume, (2, 32, 32))
    probe = f"import zarr, sys; a = zarr.open_array({str(tmp_path / 'b.zarr')!r}, mode='r'); print(int(a[:].sum()))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert int(out.stdout) == int(volume.astype(np.int64).sum())  # found through the zarr.codecs entry point


def test_a_corrupted_chunk_is_an_error_never_data(tmp_path: Path) -> None:
    volume = em_like((4, 64, 64), seed=7)
    _array(tmp_path / "c.zarr", volume, (4, 64, 64))
    chunk = tmp_path / "c.zarr" / "c" / "0" / "0" / "0"
    damaged = bytearray(chunk.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    chunk.write_bytes(bytes(damaged))
    with pytest.raises(EmzipError, match=r"chunk .*c\.zarr/c/0/0/0: .*damaged"):
        zarr.open_array(str(tmp_path / "c.zarr"), mode="r")[:]


def test_inbox_restored_as_archive_reads_back_identical_through_zarr(prefect_api: str, tmp_path: Path) -> None:
    from flows.restore import restore_flow

    volume = em_like((6, 70, 90), seed=8)
    grid = (4, 64, 64)
    inbox = tmp_path / "inbox"
    write_inbox(volume, grid, inbox, codec={"steps": 0})
    result = restore_flow(inbox=str(inbox), restored=str(tmp_path / "archive"), target="archive")
    assert result["progress"]["restored"] == 8 and not result["refused"]
    archive = zarr.open_array(str(tmp_path / "archive" / "vol.zarr" / "0"), mode="r")  # OME-Zarr level 0
    np.testing.assert_array_equal(archive[:], volume)
    assert archive.metadata.dimension_names == ("z", "y", "x")
    assert archive.attrs["voxel_size"] == [30.0, 8.0, 8.0] and archive.attrs["units"] == "nm"
    for block in block_grid("vol", volume.shape, grid):  # the shipped bytes themselves, never re-encoded
        shipped = inbox / "vol" / f"{block.file_stem}.emz"
        assert file_sha256(chunk_path(tmp_path / "archive" / "vol.zarr" / "0", block, grid)) == file_sha256(shipped)


def test_a_container_that_does_not_read_back_leaves_no_chunk(tmp_path: Path) -> None:
    volume = em_like((4, 64, 64), seed=9)
    inbox = tmp_path / "inbox"
    write_inbox(volume, (4, 64, 64), inbox, codec={"steps": 0})
    [block] = block_grid("vol", volume.shape, (4, 64, 64))
    container = inbox / "vol" / f"{block.file_stem}.emz"
    from tasks.datacenter.archive import open_archive

    archive = tmp_path / "vol.zarr"
    open_archive(archive, volume.shape, volume.dtype, (4, 64, 64), {})
    wrong_raw = array_sha256(volume + 1)
    with pytest.raises(RestoreError, match=r"archive chunk .*c/0/0/0 reads back sha256"):
        place_block(archive, block, (4, 64, 64), container.read_bytes(), file_sha256(container), wrong_raw)
    assert not chunk_path(archive, block, (4, 64, 64)).exists()
    with pytest.raises(RestoreError, match="is not the one its record describes"):
        place_block(archive, block, (4, 64, 64), container.read_bytes(), "0" * 64, array_sha256(volume))


def test_convert_is_resumable_and_never_touches_the_source(tmp_path: Path) -> None:
    from flows.cli import main
    from flows.synthetic import write_slice_folder
    from tasks.datacenter.convert import convert_volume
    from tasks.source.volumes import resolve_source

    volume = em_like((6, 70, 90), seed=10)
    folder = tmp_path / "run7"
    write_slice_folder(volume, folder)
    before = {p.name: file_sha256(p) for p in folder.iterdir()}
    archive = tmp_path / "run7-emzip.zarr"

    def stop_after_two(stage: str, done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt  # an operator's Ctrl-C mid-conversion

    source = resolve_source(folder, layout="slices", write_id=False)  # as emzip convert does
    with pytest.raises(KeyboardInterrupt):
        convert_volume(source, archive, Settings(steps=0), (4, 64, 64), progress=stop_after_two)
    assert main(["convert", str(folder), str(archive), "--layout", "slices", "--block", "4,64,64", "--quiet"]) == 0
    report = convert_volume(source, archive, Settings(steps=0), (4, 64, 64))
    assert (report.converted, report.already_done, report.blocks) == (0, 8, 8)
    np.testing.assert_array_equal(zarr.open_array(str(archive / "0"), mode="r")[:], volume)
    assert {p.name: file_sha256(p) for p in folder.iterdir()} == before


def test_learned_chunks_read_back_through_zarr(tmp_path: Path) -> None:
    """zarr bounds each chunk's output to its exact size; the engine's scratch is not counted there."""
    volume = em_like((4, 32, 40), seed=9)
    array = zarr.create_array(
        str(tmp_path / "learned.zarr"),
        shape=volume.shape,
        chunks=volume.shape,
        dtype=volume.dtype,
        serializer={"name": "emzip", "configuration": {"settings": {"steps": 5, "codec": "learned"}}},
        compressors=None,
    )
    array[:] = volume
    chunk = (tmp_path / "learned.zarr" / "c" / "0" / "0" / "0").read_bytes()
    from codec import container

    assert container.unpack(chunk).header.codec == "learned"
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "learned.zarr"), mode="r")[:], volume)


def test_a_learned_chunk_that_does_not_read_back_is_stored_with_the_classic_codec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Convert skips the codec's in-process decode (the chunk's read-back is the round trip) and
    keeps its fallback: a learned chunk that fails the read-back is coded again, classic."""
    import dataclasses

    import tasks.datacenter.convert_block as convert_block
    from codec import container
    from codec.api import encode as real_encode
    from flows.synthetic import write_slice_folder
    from tasks.datacenter.convert import convert_volume
    from tasks.datacenter.omezarr import base_array
    from tasks.source.volumes import resolve_source

    def damaged_when_learned(data: np.ndarray, settings: Settings, **kwargs: object) -> object:
        result = real_encode(data, settings, **kwargs)  # type: ignore[arg-type]
        if result.codec != "learned":
            return result
        damaged = bytearray(result.data)
        damaged[-1] ^= 0xFF  # an engine fault the encoder did not see
        return dataclasses.replace(result, data=bytes(damaged))

    monkeypatch.setattr(convert_block, "encode", damaged_when_learned)
    volume = em_like((4, 64, 64), seed=11)
    write_slice_folder(volume, tmp_path / "src")
    source = resolve_source(tmp_path / "src", layout="slices", write_id=False)
    report = convert_volume(source, tmp_path / "out.zarr", Settings(steps=20, codec="learned"), (4, 64, 64))
    assert report.converted == 1 and not report.missing
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr" / "0"), mode="r")[:], volume)
    [block] = block_grid(source.name, volume.shape, (4, 64, 64))
    chunk = chunk_path(base_array(tmp_path / "out.zarr"), block, (4, 64, 64)).read_bytes()
    assert container.unpack(chunk).header.codec == "jpegxl"
