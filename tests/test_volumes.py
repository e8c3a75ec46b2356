"""Acquisition volumes through TensorStore: every layout, block grid, readiness, growth, restore."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from flows.synthetic import em_like, write_chunked, write_slice, write_slice_folder
from tasks.datacenter.destination import RestoreError, open_destination, write_block
from tasks.edge.readiness import scan_volume
from tasks.source.grid import BlockRef, block_grid, choose_block_shape, parse_block_id
from tasks.source.volumes import VolumeError, open_volume, resolve_source, shared_context

SHAPE = (10, 40, 44)
CHUNK = (4, 16, 16)
BLOCK = (4, 16, 16)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return em_like(SHAPE, seed=3)


def _age(paths: list[Path], seconds: float) -> None:
    past = time.time() - seconds
    for path in paths:
        os.utime(path, (past, past))


def _write_layout(layout: str, volume: np.ndarray, root: Path) -> Path:
    if layout.startswith("slices"):
        folder = root / "acq"
        write_slice_folder(volume, folder, fmt=layout.split("-")[1], start=1)
        return folder
    if layout == "zarr3-sharded":
        path = root / "acq.zarr"
        write_chunked(volume, path, "zarr3", chunk=(2, 8, 8), shard=CHUNK)
        return path
    path = root / f"acq.{layout}"
    write_chunked(volume, path, layout, chunk=CHUNK)
    return path


LAYOUTS = ["zarr", "zarr3", "zarr3-sharded", "n5", "precomputed", "slices-tif", "slices-png"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_back_exactly_block_by_block(layout: str, volume: np.ndarray, tmp_path: Path) -> None:
    path = _write_layout(layout, volume, tmp_path)
    source = resolve_source(path, name="run7")
    assert source.layout == layout.split("-")[0].replace("zarr3", "zarr3")
    report = scan_volume(source, BLOCK, settle_seconds=0.0, assume_complete=True, context=shared_context())
    assert report.volume.shape == SHAPE
    assert report.volume.dtype == np.uint8
    assert not report.waiting
    # 3 in z (the last 2 deep), 3 in y (last 8 tall), 3 in x (last 12 wide): edges kept.
    assert len(report.ready) == 27
    restored = np.zeros_like(volume)
    for block in report.ready:
        (z0, z1), (y0, y1), (x0, x1) = block.bounds
        restored[z0:z1, y0:y1, x0:x1] = report.volume.read(block.bounds)
    np.testing.assert_array_equal(restored, volume)


def test_chunked_readiness_waits_for_recently_written_chunks(volume: np.ndarray, tmp_path: Path) -> None:
    path = _write_layout("zarr3", volume, tmp_path)
    source = resolve_source(path)
    report = scan_volume(source, BLOCK, settle_seconds=60.0)
    assert not report.ready  # everything was written a moment ago
    assert all("modified" in reason or "slices so far" in reason for reason in report.waiting.values())
    _age([p for p in path.rglob("*") if p.is_file()], 120)
    report = scan_volume(source, BLOCK, settle_seconds=60.0)
    assert len(report.ready) == 18  # the 2-slice-deep last z layer waits for the marker
    assert all(
        "slices so far" in report.waiting[b.block_id] for b in block_grid(source.name, SHAPE, BLOCK) if b.z0 == 8
    )
    (path / "ACQUISITION_COMPLETE").touch()
    assert len(scan_volume(source, BLOCK, settle_seconds=60.0).ready) == 27


def test_voxel_size_is_read_from_the_store(volume: np.ndarray, tmp_path: Path) -> None:
    for layout in ("zarr3", "precomputed"):
        path = _write_layout(layout, volume, tmp_path)
        opened = open_volume(resolve_source(path))
        assert opened.voxel_size == (30.0, 4.0, 4.0), layout


def test_growing_slice_folder_reports_only_complete_blocks(volume: np.ndarray, tmp_path: Path) -> None:
    folder = tmp_path / "growing"
    folder.mkdir()  # the microscope made its folder, nothing in it yet
    source = resolve_source(folder, name="grow", layout="slices")
    seen: list[list[str]] = []
    for z_end in (3, 5, 9, 10):  # the microscope appends slices between scans
        for z in range(len(list(folder.glob("*.tif"))) if folder.exists() else 0, z_end):
            write_slice(folder, z, volume[z])
        if z_end == 10:
            (folder / "ACQUISITION_COMPLETE").touch()
        report = scan_volume(source, BLOCK, settle_seconds=0.0)
        assert report.volume.shape[0] == z_end
        seen.append(sorted({b.block_id.split("_")[0] for b in report.ready}))
    assert seen == [[], ["grow/z0000"], ["grow/z0000", "grow/z0004"], ["grow/z0000", "grow/z0004", "grow/z0008"]]


def test_growing_zarr3_is_reopened_with_fresh_metadata(volume: np.ndarray, tmp_path: Path) -> None:
    import tensorstore as ts

    path = tmp_path / "grow.zarr"
    write_chunked(volume[:4], path, "zarr3", chunk=CHUNK)
    source = resolve_source(path)
    context = shared_context()
    first = scan_volume(source, BLOCK, settle_seconds=0.0, context=context)
    assert first.volume.shape[0] == 4 and len(first.ready) == 9
    store = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}).result()
    store = store.resize(exclusive_max=[8, 40, 44], expand_only=True).result()
    store[4:8].write(volume[4:8]).result()
    second = scan_volume(source, BLOCK, settle_seconds=0.0, context=context)
    assert second.volume.shape[0] == 8 and len(second.ready) == 18
    block = next(b for b in second.ready if b.z0 == 4)
    np.testing.assert_array_equal(second.volume.read(block.bounds), volume[4:8, :16, :16])


def test_half_written_slice_is_never_opened(volume: np.ndarray, tmp_path: Path) -> None:
    folder = tmp_path / "acq"
    written = write_slice_folder(volume[:7], folder)
    _age(written, 300)
    whole = written[0].read_bytes()
    half = folder / "slice_00007.tif"
    half.write_bytes(whole[: len(whole) // 2])  # the microscope is still writing this one
    source = resolve_source(folder)
    report = scan_volume(source, BLOCK, settle_seconds=30.0)
    assert [b.z0 for b in report.ready if b.y0 == 0 and b.x0 == 0] == [0]
    assert report.volume.shape[0] == 7  # slice 7 was left out, not opened
    # Were a truncated file ever taken as settled, reading it fails loudly, naming the block.
    _age([half], 300)
    report = scan_volume(source, BLOCK, settle_seconds=30.0)
    block = next(b for b in report.ready if b.z0 == 4)
    with pytest.raises(VolumeError, match="z 4:8"):
        report.volume.read(block.bounds)


def test_bad_locations_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match="does not exist"):
        resolve_source(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VolumeError, match="not a recognised acquisition volume"):
        resolve_source(tmp_path)
    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    with pytest.raises(VolumeError, match=r"broken\.zarr"):
        open_volume(resolve_source(broken))


def test_block_ids_are_stable_and_readable() -> None:
    blocks = list(block_grid("run7", (130, 600, 512), (64, 512, 512)))
    assert [b.block_id for b in blocks][:3] == [
        "run7/z0000_y0000_x0000",
        "run7/z0000_y0512_x0000",
        "run7/z0064_y0000_x0000",
    ]
    assert blocks[-1].shape == (2, 88, 512)
    assert parse_block_id("run7/z0064_y0512_x0000") == ("run7", 64, 512, 0)
    assert BlockRef.from_json(blocks[4].as_json()) == blocks[4]
    with pytest.raises(ValueError, match="malformed"):
        parse_block_id("run7/z64")
    assert choose_block_shape((1, 128, 100)) == (64, 512, 500)


def test_destination_keeps_shape_dtype_metadata_and_checks_sha(volume: np.ndarray, tmp_path: Path) -> None:
    dest = tmp_path / "restored.zarr"
    blocks = list(block_grid("acq", SHAPE, (4, 32, 32)))
    store = open_destination(dest, (8, 40, 44), np.uint8, (4, 32, 32), {"voxel_size": [30, 4, 4], "units": "nm"})
    for block in blocks:
        (z0, z1), (y0, y1), (x0, x1) = block.bounds
        data = volume[z0:z1, y0:y1, x0:x1]
        if z1 > store.shape[0]:
            store = open_destination(dest, SHAPE, np.uint8, (4, 32, 32))  # the volume grew
        write_block(store, block, data, hashlib.sha256(data.tobytes()).hexdigest())
    reopened = open_destination(dest, SHAPE, np.uint8, (4, 32, 32))
    np.testing.assert_array_equal(reopened.read().result(), volume)
    metadata = json.loads((dest / "zarr.json").read_text())
    assert metadata["attributes"]["voxel_size"] == [30, 4, 4]
    assert metadata["dimension_names"] == ["z", "y", "x"]
    with pytest.raises(RestoreError, match="differs from the record"):
        write_block(reopened, blocks[0], volume[:4, :32, :32], "0" * 64)
    with pytest.raises(RestoreError, match="holds uint8"):
        open_destination(dest, SHAPE, np.uint16, (4, 32, 32))
