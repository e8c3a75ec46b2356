"""The coding-time model is exact: any process, thread count or batch size gives the same bits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import container, decompress, encode, learned
from codec.api import _architecture, _decode_model
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[1]

_DECODE_ELSEWHERE = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[2]))
from codec import decompress
data = open(sys.argv[1], 'rb').read()
print(hashlib.sha256(decompress(data).tobytes()).hexdigest())
"""


def test_fresh_process_with_other_thread_count_decodes_exactly(tmp_path: Path, em_block: np.ndarray) -> None:
    torch.set_num_threads(2)
    result = encode(em_block, codec="learned", **FAST)
    assert result.codec == "learned"
    path = tmp_path / "block.emz"
    path.write_bytes(result.data)
    out = subprocess.run(
        [sys.executable, "-c", _DECODE_ELSEWHERE, str(path), "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert out.stdout.strip() == result.sha256


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_encoder_batch_size_does_not_change_parameters(
    monkeypatch: pytest.MonkeyPatch, em_block: np.ndarray, chunk: int
) -> None:
    data = encode(em_block, codec="learned", **FAST).data
    parsed = container.unpack(data)
    model = _decode_model(_architecture(parsed.config), parsed.model)
    reference = learned.block_parameters(model, em_block)
    monkeypatch.setattr(learned, "_ENCODE_CHUNK", chunk)
    torch.set_num_threads(1)
    try:
        again = learned.block_parameters(model, em_block)
    finally:
        torch.set_num_threads(2)
    assert np.array_equal(reference[0], again[0]) and np.array_equal(reference[1], again[1])


def test_decoder_row_features_match_encoder_features(em_block: np.ndarray) -> None:
    """Re-encoding the decoded block with the stored model reproduces the stored streams."""
    data = encode(em_block, codec="learned", **FAST).data
    parsed = container.unpack(data)
    model = _decode_model(_architecture(parsed.config), parsed.model)
    streams = learned.encode_block(model, decompress(data))
    assert learned.pack_streams(streams) == parsed.data


def test_config_records_training(em_block: np.ndarray) -> None:
    result = encode(em_block, codec="learned", **FAST)
    config = container.unpack(result.data).config
    assert config["training"]["steps"] >= 1
    json.dumps(config)
