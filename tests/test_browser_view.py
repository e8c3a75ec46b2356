"""neuroglancer, in a real browser, shows a restored image and an archive at full resolution (issue 34).

Headless Chromium (Debian's ``chromium`` on PATH), driven by playwright, loads the neuroglancer
client bundled with its Python package against ``emzip view --serve``'s server. The test asserts
that level-0 chunks loaded (through Range requests for a sharded level 0; decoded on request for
an archive) with no failed request and no error in the page's log, and saves a screenshot.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from flows.cli import main
from flows.restore import restore_flow
from flows.synthetic import em_like, write_inbox, write_slice_folder
from flows.view_server import ServedImage, start_server

pytestmark = [
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not on PATH (apt-get install chromium)"),
    pytest.mark.skipif(
        importlib.util.find_spec("neuroglancer") is None or importlib.util.find_spec("playwright") is None,
        reason="neuroglancer's bundled client or playwright is not installed (pip install -e '.[dev]')",
    ),
]


def _load(image: Path, screenshot: Path) -> dict[str, object]:
    from bench.viewers import neuroglancer_load

    with start_server(ServedImage(image), port=0) as url:
        return neuroglancer_load(url, image.stem, image, screenshot)


def test_neuroglancer_shows_a_restored_image_at_full_resolution(prefect_api: str, tmp_path: Path) -> None:
    volume = em_like((8, 64, 256), seed=349)
    write_inbox(volume, (8, 64, 256), tmp_path / "inbox", codec={"steps": 0})  # a shard of two 128-wide chunks
    restore_flow(inbox=str(tmp_path / "inbox"), restored=str(tmp_path / "restored"))
    loaded = _load(tmp_path / "restored" / "vol.zarr", tmp_path / "restored.png")
    assert loaded["level0_chunks"] and loaded["range_responses"], loaded  # the shard read by ranges
    assert not loaded["failed"] and not loaded["errors"], loaded
    assert (tmp_path / "restored.png").stat().st_size > 10_000


def test_neuroglancer_shows_an_archive_at_full_resolution(tmp_path: Path) -> None:
    volume = em_like((8, 64, 128), seed=350)
    write_slice_folder(volume, tmp_path / "run1")
    archive = tmp_path / "run1.zarr"
    assert (
        main(["convert", str(tmp_path / "run1"), str(archive), "--layout", "slices", "--effort", "0", "--quiet"]) == 0
    )
    loaded = _load(archive, tmp_path / "archive.png")
    assert loaded["level0_chunks"] == ["0/c/0/0/0"], loaded  # decoded by the server, read as plain zstd
    assert not loaded["failed"] and not loaded["errors"], loaded
    assert (tmp_path / "archive.png").stat().st_size > 10_000
