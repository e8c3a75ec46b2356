"""Exact round trips through every codec path, on generated and real data."""

from __future__ import annotations

import numpy as np
import pytest

from codec import decompress, encode
from tests.conftest import FAST


def _exact(original: np.ndarray, restored: np.ndarray) -> None:
    assert restored.dtype == original.dtype
    assert restored.shape == original.shape
    assert restored.tobytes() == np.ascontiguousarray(original).tobytes()


@pytest.mark.parametrize(
    "name, volume",
    [
        ("noise", np.random.default_rng(0).integers(0, 256, (3, 24, 40), dtype=np.uint8)),
        ("constant", np.full((4, 20, 20), 77, np.uint8)),
        ("single slice", np.random.default_rng(1).integers(90, 160, (1, 33, 17), dtype=np.uint8)),
        ("odd shape", np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)),
        ("one voxel", np.array([[[201]]], np.uint8)),
        ("extremes", np.tile(np.array([0, 255], np.uint8), (2, 9, 5))),
        ("2-D", np.random.default_rng(3).integers(0, 256, (19, 23), dtype=np.uint8)),
    ],
)
def test_learned_path_round_trips(name: str, volume: np.ndarray) -> None:
    result = encode(volume, codec="learned", **FAST)
    assert result.codec == "learned", result.reason
    _exact(volume, decompress(result.data))


def test_em_like_block_round_trips_on_auto(em_block: np.ndarray) -> None:
    result = encode(em_block, **FAST)
    _exact(em_block, decompress(result.data))
    assert result.reason


@pytest.mark.parametrize(
    "volume, codec",
    [
        (np.random.default_rng(4).integers(0, 4096, (3, 20, 30)).astype(np.uint16), "jpegxl"),
        (np.random.default_rng(5).normal(size=(2, 5, 6)).astype(np.float32), "lzma"),
        (np.random.default_rng(6).normal(size=(2, 5, 6)).astype(">f8"), "lzma"),
        (np.random.default_rng(7).integers(-900, 900, (4, 6)).astype(np.int16), "lzma"),
        (np.random.default_rng(8).integers(0, 2, (2, 3, 4)).astype(bool), "lzma"),
        (np.arange(24, dtype=np.uint8).reshape(1, 2, 3, 4), "lzma"),
        (np.zeros((0, 4, 4), np.uint8), "lzma"),
    ],
)
def test_unsupported_by_learned_path_goes_to_fallback(volume: np.ndarray, codec: str) -> None:
    result = encode(volume, **FAST)
    assert result.codec == codec
    _exact(volume, decompress(result.data))


def test_nan_payloads_survive() -> None:
    volume = np.array([np.nan, -0.0, np.inf, 1.5], np.float32).reshape(1, 2, 2)
    restored = decompress(encode(volume).data)
    assert restored.tobytes() == volume.tobytes()


@pytest.mark.parametrize("which", ["flyem", "isbi"])
def test_real_em_crops_round_trip(which: str, request: pytest.FixtureRequest) -> None:
    volume = request.getfixturevalue(which)
    crop = np.ascontiguousarray(volume[3:7, 100:164, 37:101])
    result = encode(crop, codec="learned", **FAST)
    _exact(crop, decompress(result.data))
