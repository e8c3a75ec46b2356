"""The coding-time model is exact: any process, thread count, batch size or device gives the same bits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import container, decompress, decompress_many, encode
from codec.errors import CorruptDataError
from codec.legacy import exact, lattice_codec, learned
from codec.legacy.decode import architecture as _architecture
from codec.legacy.decode import decode_frozen as _decode_frozen
from codec.legacy.freeze import quantize_layer
from codec.legacy.frozen import BatchedModel, FrozenModel, layer_specs
from codec.legacy.model import Architecture
from flows.synthetic import em_like

ROOT = Path(__file__).resolve().parents[1]

_DECODE_ELSEWHERE = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[2]))
from codec import decompress
data = open(sys.argv[1], 'rb').read()
print(hashlib.sha256(decompress(data).tobytes()).hexdigest())
"""


def _model_of(data: bytes) -> FrozenModel:
    parsed = container.unpack(data)
    return _decode_frozen(_architecture(parsed.config), parsed.model)


# Format v3's float32-exact model is what this module pins. Its encoder is retired (v4 codes
# learned blocks with the compiled engine, tests/test_engine.py), so the v3 container under
# test is the golden one, and the block is what it decodes to.
_V3_GOLDEN = ROOT / "tests" / "golden" / "learned_v3.emz"


@pytest.fixture(scope="module")
def encoded() -> bytes:
    torch.set_num_threads(2)
    data = _V3_GOLDEN.read_bytes()
    assert container.unpack(data).version == 3
    return data


@pytest.fixture(scope="module")
def em_block(encoded: bytes) -> np.ndarray:
    return decompress(encoded)


def test_fresh_process_with_other_thread_count_decodes_exactly(
    tmp_path: Path, em_block: np.ndarray, encoded: bytes
) -> None:
    path = tmp_path / "block.emz"
    path.write_bytes(encoded)
    out = subprocess.run(
        [sys.executable, "-c", _DECODE_ELSEWHERE, str(path), "1"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == container.unpack(encoded).header.sha256.hex()


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_encoder_batch_size_and_threads_do_not_change_parameters(
    em_block: np.ndarray, encoded: bytes, chunk: int
) -> None:
    model = _model_of(encoded)
    reference = lattice_codec.block_parameters(model, em_block)
    torch.set_num_threads(1)
    try:
        again = lattice_codec.block_parameters(model, em_block, chunk=chunk)
    finally:
        torch.set_num_threads(2)
    for ref_slice, slice_ in zip(reference, again, strict=True):
        for (m0, s0), (m1, s1) in zip(ref_slice, slice_, strict=True):
            assert np.array_equal(m0, m1) and np.array_equal(s0, s1)


def test_decoded_block_re_encodes_to_the_stored_streams(encoded: bytes) -> None:
    parsed = container.unpack(encoded)
    streams = lattice_codec.encode_block(_model_of(encoded), decompress(encoded))
    assert learned.pack_streams(streams) == parsed.data


def test_batched_decoding_of_different_blocks_equals_one_by_one() -> None:
    blocks = [em_like((5, 40, 36), seed=s) for s in (11, 12, 13)]
    blobs = [encode(b, codec="learned", steps=15, seed=s).data for s, b in enumerate(blocks)]
    blobs.append(encode(em_like((3, 20, 20), seed=14), codec="jpegxl").data)  # not batchable
    for batch in (1, 2, 8):
        decoded = decompress_many(blobs, batch=batch)
        assert len(decoded) == 4
        for got, data in zip(decoded, blobs, strict=True):
            assert np.array_equal(got, decompress(data))


def _reference_dense(layer: exact.ExactLayer, x: np.ndarray) -> np.ndarray:
    """The layer in int64 arithmetic: what float32 must reproduce."""
    acc = layer.weight.astype(np.int64) @ x.astype(np.int64) + layer.offset()[:, None]
    s = layer.shift.astype(np.int64)[:, None]
    out = np.where(s >= 0, acc >> np.maximum(s, 0), acc << np.maximum(-s, 0))
    return np.clip(out, layer.lo[:, None], layer.hi[:, None])


def _bound_filling_layer(rng: np.random.Generator, spec_out: int, fan_in: int, input_max: int) -> exact.ExactLayer:
    """Random int8 weights scaled so the partial-sum bound sits just below 2**24."""
    weight = rng.integers(-127, 128, (spec_out, fan_in)).astype(np.int64)
    shift = np.full(spec_out, 12, np.int64)
    bias = np.zeros(spec_out, np.int64)
    budget = exact.ACCUMULATOR_LIMIT - 1 - (1 << 11)
    weight = weight * np.maximum(budget // (np.abs(weight).sum(axis=1, keepdims=True) * input_max), 1)
    layer = exact.ExactLayer(weight, bias, shift, np.full(spec_out, -(1 << 20)), np.full(spec_out, 1 << 20))
    exact.check_bounds(layer, np.full(fan_in, input_max), "test layer")
    return layer


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_dense_equals_int64_arithmetic_at_the_bound(threads: int) -> None:
    rng = np.random.default_rng(3)
    layer = _bound_filling_layer(rng, 16, 45, 1023)
    x = rng.choice([-1023, 1023], (45, 5000)).astype(np.int64)  # the extremes, both signs
    torch.set_num_threads(threads)
    try:
        got = exact.TorchLayer.stack([layer], torch.device("cpu")).dense(torch.as_tensor(x, dtype=torch.float32)[None])
    finally:
        torch.set_num_threads(2)
    assert np.array_equal(got[0].numpy().astype(np.int64), _reference_dense(layer, x))


def test_a_model_breaking_the_bound_is_refused(encoded: bytes) -> None:
    model = _model_of(encoded)
    last = model.layers[-1]  # an output layer: int16 weights, fan-in of every head input
    wild = exact.ExactLayer(np.full_like(last.weight, 32767), last.bias, last.shift, last.lo, last.hi)
    with pytest.raises(exact.BoundError, match="2\\*\\*24"):
        FrozenModel(model.arch, [*model.layers[:-1], wild])
    # The same model read from container bytes is refused with a container error.
    with pytest.raises(CorruptDataError, match="float32 would not be exact"):
        FrozenModel.from_bytes(model.arch, _unchecked(model, wild).to_bytes())


def _unchecked(model: FrozenModel, last: exact.ExactLayer) -> FrozenModel:
    out = FrozenModel.__new__(FrozenModel)
    out.arch, out.layers = model.arch, [*model.layers[:-1], last]
    return out


def test_freezing_rescales_a_layer_that_would_break_the_bound() -> None:
    arch = Architecture(trunk_channels=16)
    spec = layer_specs(arch)[1]  # 16 -> 16 convolution, fan-in 144, inputs up to 1023
    weight = np.ones(spec.shape)  # every weight at its largest: 144 * 127 * 1023 > 2**24
    layer = quantize_layer(weight, np.zeros(16), np.zeros(16, np.int64), np.zeros(16, np.int64), spec)
    assert int(np.abs(layer.weight).max()) < spec.weight_limit  # lowered to fit
    exact.check_bounds(layer, spec.input_max, "rescaled layer")


def test_batched_model_matches_one_model_at_a_time(encoded: bytes) -> None:
    model = _model_of(encoded)
    x = torch.randint(-128, 128, (1, 1, model.arch.k, 24, 20)).float()
    one = BatchedModel([model], torch.device("cpu")).trunk_features(x)
    three = BatchedModel([model, model, model], torch.device("cpu")).trunk_features(x.expand(3, -1, -1, -1, -1))
    assert all(torch.equal(one[0], three[i]) for i in range(3))


def test_config_records_training(encoded: bytes) -> None:
    config = container.unpack(encoded).config
    assert config["training"]["steps"] >= 1
    json.dumps(config)
