"""The emzip command line: compress, decompress, info, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from flows.cli import main
from flows.synthetic import em_like


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_compress_decompress_info(tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]) -> None:
    volume = em_like((3, 24, 28), seed=2)
    source = tmp_path / f"in{suffix}"
    if suffix == ".npy":
        np.save(source, volume)
    else:
        tifffile.imwrite(source, volume, photometric="minisblack")
    packed = tmp_path / "block.emz"
    assert main(["compress", str(source), str(packed), "--effort", "1", "--quiet"]) == 0
    assert main(["info", str(packed)]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["shape"] == [3, 24, 28] and info["dtype"] == "|u1"
    restored = tmp_path / f"out{suffix}"
    assert main(["decompress", str(packed), str(restored), "--quiet"]) == 0
    back = np.load(restored) if suffix == ".npy" else tifffile.imread(restored)
    assert np.array_equal(back, volume)
    if suffix == ".tif":  # 3 grey slices, not one RGB image
        with tifffile.TiffFile(restored) as written:
            assert written.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["block.emz", f"in{suffix}", f"out{suffix}"])


def test_damaged_container_names_file_and_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.npy"
    np.save(source, np.arange(100, dtype=np.uint16).reshape(1, 10, 10))
    packed = tmp_path / "x.emz"
    assert main(["compress", str(source), str(packed), "--quiet"]) == 0
    packed.write_bytes(packed.read_bytes()[:-7])
    target = tmp_path / "out.npy"
    assert main(["decompress", str(packed), str(target), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(packed) in err and "ends" in err
    assert not target.exists()


def test_unreadable_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    assert main(["compress", str(bad), str(tmp_path / "o.emz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "broken.npy" in err and "cannot read" in err
    assert main(["compress", str(tmp_path / "missing.npy"), str(tmp_path / "o.emz")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "o.emz").exists()


def test_pickled_npy_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "objects.npy"
    np.save(evil, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["compress", str(evil), str(tmp_path / "o.emz")]) == 2
    assert "objects.npy" in capsys.readouterr().err


@pytest.mark.parametrize("block", ["64,256", "64,256,0", "a,b,c"])
def test_bench_with_a_malformed_block_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], block: str
) -> None:
    np.save(tmp_path / "x.npy", em_like((4, 32, 32), seed=1))
    assert main(["bench", str(tmp_path / "x.npy"), "--block", block, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"emzip: error: --block {block!r}: expected three positive integers z,y,x"
