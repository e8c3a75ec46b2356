"""What a viewer needs from a restored image or an archive (issue 34).

``emzip view --serve`` answers Range, HEAD and CORS preflight (Starlette under uvicorn); an
archive's emzip-coded level 0 is served as a plain zstd array that a reader without emzip decodes
(TensorStore's HTTP kvstore here; neuroglancer in ``test_browser_view.py``). Images carry the
source's voxel size and units, have no chunk larger than the array where a smaller one serves,
keep their locks and ledgers outside, and hold no absolute paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from flows.cli import main
from flows.restore import restore_flow
from flows.synthetic import em_like, write_inbox, write_slice_folder
from flows.view import describe, neuroglancer_state
from flows.view_server import ServedImage, start_server


def _convert(source: Path | str, archive: Path, *extra: str) -> None:
    assert main(["convert", str(source), str(archive), "--effort", "0", "--quiet", *extra]) == 0


def _write_zarr3(volume: np.ndarray, path: Path, chunk: list[int]) -> None:
    """A zarr v3 source array written by TensorStore."""
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    layout = ts.ChunkLayout(chunk_shape=chunk)
    ts.open(spec, create=True, dtype="uint8", shape=volume.shape, chunk_layout=layout).result().write(volume).result()


def _served_level0(url: str) -> np.ndarray:
    """Level 0 read over HTTP by TensorStore, which knows nothing of emzip."""
    store = ts.open({"driver": "zarr3", "kvstore": url + "0/"}, open=True, read=True).result()
    return np.asarray(store.read().result())


def test_a_range_request_answers_206_with_the_requested_bytes(prefect_api: str, tmp_path: Path) -> None:
    import httpx

    volume = em_like((8, 64, 96), seed=340)
    write_inbox(volume, (4, 32, 96), tmp_path / "inbox", codec={"steps": 0})  # sharded level 0: 3 inner chunks
    restore_flow(inbox=str(tmp_path / "inbox"), restored=str(tmp_path / "restored"))
    image = tmp_path / "restored" / "vol.zarr"
    shard = image / "0" / "c" / "0" / "0" / "0"
    whole = shard.read_bytes()
    with start_server(ServedImage(image), port=0) as url:
        part = httpx.get(url + "0/c/0/0/0", headers={"Range": "bytes=10-49", "Origin": "http://viewer"})
        assert part.status_code == 206 and part.content == whole[10:50]
        assert part.headers["content-range"] == f"bytes 10-49/{len(whole)}"
        assert part.headers["access-control-allow-origin"] == "*"
        assert "content-range" in part.headers["access-control-expose-headers"].lower()
        tail = httpx.get(url + "0/c/0/0/0", headers={"Range": "bytes=-16"})  # neuroglancer's shard index read
        assert tail.status_code == 206 and tail.content == whole[-16:]
        head = httpx.head(url + "zarr.json")
        assert head.status_code == 200 and int(head.headers["content-length"]) == (image / "zarr.json").stat().st_size
        preflight = httpx.options(
            url + "0/c/0/0/0",
            headers={"Origin": "http://viewer", "Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "range"},
        )  # fmt: skip
        assert preflight.status_code == 200 and "range" in preflight.headers["access-control-allow-headers"].lower()
        np.testing.assert_array_equal(_served_level0(url), volume)


def test_an_archive_is_served_as_a_standard_ome_zarr(tmp_path: Path) -> None:
    import httpx

    volume = em_like((10, 48, 70), seed=341)
    write_slice_folder(volume, tmp_path / "run1")
    archive = tmp_path / "run1.zarr"
    _convert(tmp_path / "run1", archive, "--layout", "slices", "--block", "4,32,32")
    served = ServedImage(archive)
    with start_server(served, port=0) as url:
        metadata = httpx.get(url + "0/zarr.json").json()
        assert [c["name"] for c in metadata["codecs"]] == ["bytes", "zstd"]  # no emzip on the wire
        np.testing.assert_array_equal(_served_level0(url), volume)  # edge chunks padded as zarr pads them
        assert served.archive is not None and served.archive.decoded == 3 * 2 * 3
        np.testing.assert_array_equal(_served_level0(url), volume)
        assert served.archive.decoded == 3 * 2 * 3  # the second read comes from the cache
        assert httpx.get(url + "0/c/9/0/0").status_code == 404  # beyond the array: the fill value
        (archive / "0" / "c" / "1" / "1" / "1").write_bytes(b"EMZ not a container")
        broken = httpx.get(url + "0/c/1/1/1")
        assert broken.status_code == 500 and "c/1/1/1" in broken.text  # names the chunk; the server goes on
        assert httpx.get(url + "zarr.json").status_code == 200
    assert not any(archive.rglob("*.partial"))  # nothing was written into the archive


def test_voxel_size_and_units_come_from_an_ome_zarr_source(tmp_path: Path) -> None:
    volume = em_like((6, 40, 50), seed=342)
    source = tmp_path / "acquired.ome.zarr"
    _write_zarr3(volume, source / "0", [6, 40, 50])
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    dataset = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [30.0, 8.0, 8.0]}]}
    group = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [dataset]}]}
    (source / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"ome": group}})
    )
    for given, archive in ((source, tmp_path / "from-group.zarr"), (source / "0", tmp_path / "from-array.zarr")):
        _convert(given, archive)
        multiscale = json.loads((archive / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
        assert [axis["unit"] for axis in multiscale["axes"]] == ["nanometer"] * 3, given
        assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [30.0, 8.0, 8.0], given
        np.testing.assert_array_equal(np.asarray(__import__("zarr").open_array(str(archive / "0"))[...]), volume)
    slices = tmp_path / "slices"
    write_slice_folder(volume, slices)
    _convert(slices, tmp_path / "given.zarr", "--voxel-size", "50,4,4", "--unit", "nm")
    multiscale = json.loads((tmp_path / "given.zarr" / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    assert multiscale["axes"][2]["unit"] == "nanometer"
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [50.0, 4.0, 4.0]
    assert main(["convert", str(slices), str(tmp_path / "bad.zarr"), "--voxel-size", "4,4"]) == 2


def test_no_chunk_larger_than_the_array_and_still_a_pyramid(prefect_api: str, tmp_path: Path) -> None:
    volume = em_like((12, 100, 90), seed=343)  # narrower than the default 512 tile
    source = tmp_path / "narrow.zarr"
    _write_zarr3(volume, source, [4, 64, 64])
    archive = tmp_path / "narrow-archive.zarr"
    _convert(source, archive)
    level0 = json.loads((archive / "0" / "zarr.json").read_text())
    chunk = level0["chunk_grid"]["configuration"]["chunk_shape"]
    assert all(c <= s for c, s in zip(chunk, level0["shape"], strict=True)), chunk
    assert len(json.loads((archive / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]["datasets"]) == 1
    # a restored volume whose block is one inner chunk: plain chunks, no shard of one chunk
    write_inbox(volume, (4, 64, 64), tmp_path / "inbox", codec={"steps": 0})
    restore_flow(inbox=str(tmp_path / "inbox"), restored=str(tmp_path / "restored"))
    restored = json.loads((tmp_path / "restored" / "vol.zarr" / "0" / "zarr.json").read_text())
    assert [c["name"] for c in restored["codecs"]] == ["bytes", "zstd"]
    wide = em_like((4, 250, 250), seed=344)
    source = tmp_path / "wide.zarr"
    _write_zarr3(wide, source, [4, 250, 250])
    _convert(source, tmp_path / "wide-archive.zarr")
    image = json.loads((tmp_path / "wide-archive.zarr" / "zarr.json").read_text())
    assert len(image["attributes"]["ome"]["multiscales"][0]["datasets"]) == 2  # 250 wide gets an overview level


def test_locks_ledgers_and_absolute_paths_stay_out_of_the_image(prefect_api: str, tmp_path: Path) -> None:
    volume = em_like((8, 64, 64), seed=345)
    write_slice_folder(volume, tmp_path / "run1")
    archive = tmp_path / "out" / "run1.zarr"
    _convert(tmp_path / "run1", archive, "--layout", "slices", "--block", "4,32,32")
    _convert(tmp_path / "run1", archive, "--layout", "slices", "--block", "4,32,32")  # resumes: ledger found beside
    assert (tmp_path / "out" / ".run1.zarr.emzip" / "ledger.sqlite").is_file()
    write_inbox(volume, (4, 32, 32), tmp_path / "inbox", codec={"steps": 0})
    restore_flow(inbox=str(tmp_path / "inbox"), restored=str(tmp_path / "restored"))
    for image in (archive, tmp_path / "restored" / "vol.zarr"):
        names = [p.relative_to(image) for p in image.rglob("*")]
        assert not [n for n in names if n.name.startswith(".") or "ledger" in n.name or "lock" in n.name], names
        for metadata in image.rglob("zarr.json"):
            assert str(tmp_path) not in metadata.read_text(), metadata


def test_an_old_archive_ledger_moves_beside_the_archive(tmp_path: Path) -> None:
    from tasks.datacenter.convert import LEDGER, ledger_path

    volume = em_like((8, 64, 64), seed=346)
    write_slice_folder(volume, tmp_path / "run1")
    archive = tmp_path / "run1.zarr"
    _convert(tmp_path / "run1", archive, "--layout", "slices", "--block", "4,32,32")
    beside = ledger_path(archive)
    beside.rename(archive / LEDGER)  # where the code before kept it
    chunk = archive / "0" / "c" / "0" / "0" / "0"
    before = chunk.stat().st_mtime_ns
    _convert(tmp_path / "run1", archive, "--layout", "slices", "--block", "4,32,32")
    assert beside.is_file() and not (archive / LEDGER).exists()
    assert chunk.stat().st_mtime_ns == before  # resumed from the moved ledger: nothing coded again


def test_the_neuroglancer_state_shows_the_section_in_metres(prefect_api: str, tmp_path: Path) -> None:
    volume = em_like((4, 64, 64), seed=347)
    write_inbox(volume, (4, 32, 32), tmp_path / "inbox", codec={"steps": 0}, voxel_size=(30.0, 8.0, 8.0))
    restore_flow(inbox=str(tmp_path / "inbox"), restored=str(tmp_path / "restored"))
    image = tmp_path / "restored" / "vol.zarr"
    state = neuroglancer_state("http://host/vol.zarr/", "vol", image)
    assert list(state["dimensions"]) == ["x", "y", "z"] and state["layout"] == "xy"  # x across, y down, z scrolls
    assert state["dimensions"]["z"] == [pytest.approx(30e-9), "m"] and state["dimensions"]["x"] == [
        pytest.approx(8e-9),
        "m",
    ]


def test_messages_are_true_for_a_one_level_archive(tmp_path: Path) -> None:
    volume = em_like((4, 32, 32), seed=348)
    write_slice_folder(volume, tmp_path / "run1")
    archive = tmp_path / "run1.zarr"
    _convert(tmp_path / "run1", archive, "--layout", "slices", "--block", "4,32,32")
    text = "\n".join(describe(archive))
    assert "1 level (" in text and "1 levels" not in text
    assert "levels 1 and up" not in text and "emzip view --serve" in text
