"""The learned path never makes things worse: failures and losses go to the classic codec."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from codec import api, decompress, encode
from codec.v4 import engine as v4_engine
from codec.v4 import train as v4_train
from tests.conftest import FAST


def test_tiny_block_uses_classic_codec() -> None:
    volume = np.random.default_rng(0).integers(0, 256, (2, 10, 10), dtype=np.uint8)
    result = encode(volume, **FAST)
    assert result.codec == "jpegxl"
    assert "too small" in result.reason


def test_effort_zero_trains_nothing(em_block: np.ndarray) -> None:
    result = encode(em_block, effort=0)
    assert result.codec == "jpegxl" and result.training is None


def test_training_failure_falls_back(
    monkeypatch: pytest.MonkeyPatch, em_block: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*_a: object, **_k: object) -> None:
        raise RuntimeError("loss became NaN")

    monkeypatch.setattr(v4_train, "train", explode)  # v4_block.encode imports it when it trains
    with caplog.at_level(logging.WARNING, logger="emzip.codec"):
        result = encode(em_block, codec="learned", **FAST)
    assert result.codec == "jpegxl"
    assert "loss became NaN" in result.reason
    assert "learned coding failed" in caplog.text
    assert np.array_equal(decompress(result.data), em_block)


def test_learned_stream_larger_than_classic_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # On 2 small slices the model's weights alone outweigh JPEG-XL's whole stream.
    monkeypatch.setattr(api, "MIN_LEARNED_VOXELS", 0)
    noise = np.random.default_rng(3).integers(0, 256, (2, 32, 32), dtype=np.uint8)
    result = encode(noise, **FAST)
    assert result.codec == "jpegxl"
    assert "not larger than learned" in result.reason


def test_failed_verification_never_ships_learned_bytes(monkeypatch: pytest.MonkeyPatch, em_block: np.ndarray) -> None:
    original = v4_engine.decode_blocks

    def corrupting(*args: object, **kwargs: object) -> list[np.ndarray]:
        out = original(*args, **kwargs)  # type: ignore[arg-type]
        out[0][0, 0, 0] ^= 1
        return out

    monkeypatch.setattr(v4_engine, "decode_blocks", corrupting)
    result = encode(em_block, codec="learned", **FAST)
    assert result.codec == "jpegxl"
    assert result.reason == "learned container failed verification"
