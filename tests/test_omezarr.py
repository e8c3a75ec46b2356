"""Restored volumes are OME-Zarr 0.5 images with a mean pyramid (issue 26).

Every level is compared with a reference mean-pool written here, independently of
``tasks.datacenter.pyramid``: numpy block sums over a zero-padded copy, divided by the count of voxels
inside the volume, rounded half up.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from bench.reliability.harness import run_flow_process
from flows.demo import read_restored
from flows.restore import restore_flow
from flows.synthetic import em_like, write_inbox, write_slice_folder
from tasks.datacenter.omezarr import read_image
from tasks.datacenter.pyramid import level_plan

GRID = (4, 32, 32)
SHAPE = (12, 70, 100)  # partial blocks on every axis, odd sizes at the levels


def reference_pyramid(volume: np.ndarray, factors: list[tuple[int, int, int]]) -> list[np.ndarray]:
    """Each level as a mean of the level below, by reshaping a zero-padded copy (not tasks.datacenter.pyramid)."""
    levels = [volume]
    for below, here in itertools.pairwise(factors):
        step = tuple(h // b for h, b in zip(here, below, strict=True))
        data = levels[-1].astype(np.int64)
        padded_shape = tuple(math.ceil(n / s) * s for n, s in zip(data.shape, step, strict=True))
        values = np.zeros(padded_shape, np.int64)
        inside = np.zeros(padded_shape, np.int64)
        values[: data.shape[0], : data.shape[1], : data.shape[2]] = data
        inside[: data.shape[0], : data.shape[1], : data.shape[2]] = 1
        shape = [n for size, s in zip(padded_shape, step, strict=True) for n in (size // s, s)]
        sums = values.reshape(shape).sum(axis=(1, 3, 5))
        counts = inside.reshape(shape).sum(axis=(1, 3, 5))
        levels.append(((2 * sums + counts) // (2 * counts)).astype(volume.dtype))
    return levels


def _level_files(image: Path) -> dict[str, object]:
    """Every file of every pyramid level, and the group's ``ome`` attributes (level 0 is checked by value:
    its shards' layout may follow the order blocks were written; ``emzip.restored_from`` names the inbox)."""
    files: dict[str, object] = {
        str(p.relative_to(image)): p.read_bytes()
        for p in sorted(image.rglob("*"))
        if p.is_file() and p.relative_to(image).parts[0] not in ("0", "zarr.json") and not p.name.startswith(".")
    }
    files["ome"] = json.loads((image / "zarr.json").read_text())["attributes"]["ome"]
    return files


def _record(path: Path) -> dict[str, object]:
    return dict(json.loads(path.read_text()))


def _check_image(image: Path, volume: np.ndarray, grid: tuple[int, int, int] = GRID) -> None:
    from ome_zarr_models.v05.image import Image

    model = Image.from_zarr(zarr.open_group(str(image), mode="r"))  # validates against OME-Zarr 0.5
    [multiscale] = model.attributes.ome.multiscales
    found = read_image(image)
    assert found is not None
    factors = [level.factor for level in found.levels]
    assert [d.path for d in multiscale.datasets] == [str(i) for i in range(len(factors))]
    for level, expected in enumerate(reference_pyramid(volume, factors)):
        np.testing.assert_array_equal(read_restored(image, level), expected, err_msg=f"level {level}")
    top = read_restored(image, len(factors) - 1)
    assert top.shape[1] <= grid[1] and top.shape[2] <= grid[2]  # down to one chunk in y and x


@pytest.mark.parametrize(
    "grid",
    [GRID, (3, 30, 30)],
    ids=["level 1 from each block in its worker", "odd grid: level 1 from level 0 in the pass"],
)
def test_restored_volume_is_a_valid_ome_zarr_image_with_a_mean_pyramid(
    prefect_api: str, tmp_path: Path, grid: tuple[int, int, int]
) -> None:
    volume = em_like(SHAPE, seed=61)
    write_inbox(volume, grid, tmp_path / "inbox", codec={"steps": 0}, voxel_size=(8.0, 8.0, 8.0))
    result = restore_flow(inbox=str(tmp_path / "inbox"), restored=str(tmp_path / "restored"))
    blocks = math.prod(math.ceil(n / g) for n, g in zip(SHAPE, grid, strict=True))
    assert result["progress"]["restored"] == blocks and not result["pyramids_unfinished"]
    in_worker = {r["restore"]["pyramid_level_one"] for r in map(_record, (tmp_path / "inbox").rglob("*.prov.json"))}
    assert in_worker == {grid == GRID}
    image = tmp_path / "restored" / "vol.zarr"
    _check_image(image, volume, grid)
    attributes = json.loads((image / "zarr.json").read_text())["attributes"]
    [multiscale] = attributes["ome"]["multiscales"]
    assert [a["unit"] for a in multiscale["axes"]] == ["nanometer"] * 3
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales[:3] == [[8.0, 8.0, 8.0], [16.0, 16.0, 16.0], [32.0, 32.0, 32.0]]  # isotropic: z halves too
    window = attributes["ome"]["omero"]["channels"][0]["window"]
    top = read_restored(image, len(scales) - 1)
    assert (window["min"], window["max"]) == (0, 255) and (window["start"], window["end"]) == (top.min(), top.max())


def test_a_broken_attribute_fails_the_schema_check(prefect_api: str, tmp_path: Path) -> None:
    from ome_zarr_models.v05.image import Image

    volume = em_like((4, 64, 64), seed=62)
    write_inbox(volume, GRID, tmp_path / "inbox", codec={"steps": 0})
    restore_flow(inbox=str(tmp_path / "inbox"), restored=str(tmp_path / "restored"))
    image = tmp_path / "restored" / "vol.zarr"
    Image.from_zarr(zarr.open_group(str(image), mode="r"))
    metadata = json.loads((image / "zarr.json").read_text())
    metadata["attributes"]["ome"]["multiscales"][0]["axes"][0]["name"] = "y"  # two axes called y
    (image / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="unique"):
        Image.from_zarr(zarr.open_group(str(image), mode="r"))


def test_anisotropic_sstem_keeps_z_until_y_and_x_are_as_coarse() -> None:
    levels = level_plan((100, 4000, 4000), (16, 128, 128), (50.0, 4.0, 4.0))
    assert [lv.factor for lv in levels][:5] == [(1, 1, 1), (1, 2, 2), (1, 4, 4), (1, 8, 8), (1, 16, 16)]
    assert levels[-1].factor == (2, 32, 32) and levels[-1].shape == (50, 125, 125)
    assert all(lv.factor[0] == 1 for lv in level_plan((100, 4000, 4000), (16, 128, 128), None))  # unknown: keep z


def test_shuffled_arrival_and_a_kill_mid_pyramid_give_the_same_bytes(prefect_api: str, tmp_path: Path) -> None:
    volume = em_like(SHAPE, seed=63)
    inbox = tmp_path / "inbox"
    write_inbox(volume, GRID, inbox, codec={"steps": 0}, voxel_size=(8.0, 8.0, 8.0))
    in_order = tmp_path / "in-order"
    restore_flow(inbox=str(inbox), restored=str(in_order))
    reference = _level_files(in_order / "vol.zarr")
    assert len(reference) > 3

    # blocks arriving in a shuffled order, over four runs: the pyramid grows with the volume
    shuffled, arriving = tmp_path / "shuffled", tmp_path / "arriving"
    containers = sorted((inbox / "vol").glob("*.emz"))
    random.Random(5).shuffle(containers)
    for part in range(4):
        for container in containers[part::4]:
            for path in (container, container.with_name(container.stem + ".prov.json")):
                (arriving / "vol").mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, arriving / "vol" / path.name)
        restore_flow(inbox=str(arriving), restored=str(shuffled))
    assert _level_files(shuffled / "vol.zarr") == reference
    _check_image(shuffled / "vol.zarr", volume)

    # killed mid-pyramid (in a worker writing level 1, or in the pass writing level 2), resumed
    for point in ("pyramid.block#3", "pyramid.chunk#1"):
        killed = tmp_path / f"killed-{point}"
        params = {"inbox": str(inbox), "restored": str(killed)}
        code, _ = run_flow_process("restore", params, point)
        assert code == -9, f"the restore was not killed at {point}: the test did not test anything"
        run_flow_process("restore", params, None)
        assert _level_files(killed / "vol.zarr") == reference, point
        _check_image(killed / "vol.zarr", volume)


def test_archive_target_keeps_the_shipped_containers_under_its_pyramid(prefect_api: str, tmp_path: Path) -> None:
    volume = em_like(SHAPE, seed=64)
    write_inbox(volume, GRID, tmp_path / "inbox", codec={"steps": 0})
    restore_flow(inbox=str(tmp_path / "inbox"), restored=str(tmp_path / "restored"), target="archive")
    image = tmp_path / "restored" / "vol.zarr"
    np.testing.assert_array_equal(zarr.open_array(str(image / "0"), mode="r")[:], volume)  # level 0 as before
    _check_image(image, volume)


def test_convert_writes_the_same_ome_zarr_layout(tmp_path: Path) -> None:
    from flows.cli import main

    volume = em_like(SHAPE, seed=65)
    write_slice_folder(volume, tmp_path / "run1")
    archive = tmp_path / "run1.zarr"
    args = ["convert", str(tmp_path / "run1"), str(archive), "--layout", "slices", "--block", "4,32,32", "--quiet"]
    assert main([*args, "--effort", "0"]) == 0
    _check_image(archive, volume)


def test_view_prints_the_neuroglancer_source_and_serves_it_with_cors(
    prefect_api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    from flows.cli import main
    from flows.view_server import ServedImage, start_server

    volume = em_like((4, 64, 64), seed=66)
    write_inbox(volume, GRID, tmp_path / "inbox", codec={"steps": 0})
    restore_flow(inbox=str(tmp_path / "inbox"), restored=str(tmp_path / "restored"))
    image = tmp_path / "restored" / "vol.zarr"
    assert main(["view", str(image)]) == 0
    out = capsys.readouterr().out
    assert f"neuroglancer source: zarr3://file://{image.resolve()}/" in out and "OME-Zarr 0.5 image, uint8" in out
    assert main(["view", str(tmp_path)]) == 2  # not a volume: one line, no traceback
    assert "no zarr.json here" in capsys.readouterr().err
    with start_server(ServedImage(image), port=0) as url:
        response = httpx.get(url + "zarr.json", headers={"Origin": "https://neuroglancer-demo.appspot.com"})
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*"
        assert response.json()["attributes"]["ome"]["version"] == "0.5"
        assert httpx.get(url + "1/zarr.json").status_code == 200  # the pyramid's levels are served too


def test_the_pyramid_of_a_growing_acquisition_grows_with_it(prefect_api: str, tmp_path: Path) -> None:
    volume = em_like(SHAPE, seed=67)
    inbox, restored = tmp_path / "inbox", tmp_path / "restored"
    image = restored / "vol.zarr"
    # first a 32x32 column (one chunk in y and x: no pyramid yet), then slices 0-3 of the whole field
    write_inbox(np.ascontiguousarray(volume[:, :32, :32]), GRID, inbox, codec={"steps": 0}, voxel_size=(8.0, 8.0, 8.0))
    restore_flow(inbox=str(inbox), restored=str(restored))
    assert len(read_image(image).levels) == 1  # type: ignore[union-attr]
    shutil.rmtree(inbox)
    write_inbox(np.ascontiguousarray(volume[:4]), GRID, inbox, codec={"steps": 0}, voxel_size=(8.0, 8.0, 8.0))
    restore_flow(inbox=str(inbox), restored=str(restored))
    grown = read_image(image)
    assert grown is not None and len(grown.levels) == 3  # levels added as the field grew
    assert read_restored(image, 1).shape == (6, 35, 50)  # the z extent so far: the column's 12 slices
    # then the rest of the slices: every level grows in z, and equals the mean-pool of the whole volume
    shutil.rmtree(inbox)
    write_inbox(volume, GRID, inbox, codec={"steps": 0}, voxel_size=(8.0, 8.0, 8.0))
    result = restore_flow(inbox=str(inbox), restored=str(restored))
    assert result["progress"]["restored"] == 36 and not result["pyramids_unfinished"]
    _check_image(image, volume)
