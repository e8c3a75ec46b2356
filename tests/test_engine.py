"""Format v4's compiled engine: exact round trips in every configuration, and the reference.

The engine (codec/_engine.c) is built by `pip install -e .`; these tests show that its output
does not depend on the kernel (portable C or AVX2), the thread count, the batch of blocks or
the process, and that the plain-Python reference decoder reads its streams bit for bit.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import codec._engine as compiled
from codec import CorruptDataError, container, decompress, decompress_many, encode
from codec.v4 import block as v4_block
from codec.v4 import engine, reference
from codec.v4.context import DEFAULT_CONTEXT, features, make_context
from codec.v4.freeze import BoundError, check_bounds
from codec.v4.tables import coder_tables, tables_sha256
from flows.synthetic import em_like

REPO = Path(__file__).resolve().parents[1]


def _trained(block: np.ndarray, **settings: object) -> bytes:
    return encode(block, codec="learned", steps=40, seed=1, **settings).data  # type: ignore[arg-type]


def _job(data: bytes) -> v4_block.DecodeJob:
    parsed = container.unpack(data)
    return v4_block.parse(parsed.config, parsed.model, parsed.data, parsed.header.shape)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def coded() -> tuple[np.ndarray, bytes]:
    block = em_like((6, 64, 72), seed=11)
    return block, _trained(block, stripes=3)


def test_tables_are_pinned() -> None:
    """The v4 tables come from integer arithmetic only: the same bytes on every machine."""
    assert tables_sha256("laplace") == "5a8e7abe0294de259025c3d2371c3f2cf06cdd2d1dd161a5f1371f0b94396d57"
    assert tables_sha256("gaussian") == "225e91da6f8c780972e6651acc0c9c1a9614356a00058d0dde57ac821f000dd2"
    for family in ("laplace", "gaussian"):
        assert np.all(coder_tables(family).cum[:, -1] == 1 << 20)


def test_round_trip_is_the_same_on_every_thread_count_and_batch(coded: tuple[np.ndarray, bytes]) -> None:
    block, data = coded
    assert len(_job(data).streams) == 3
    for threads in (1, 2, 3, 4):
        np.testing.assert_array_equal(decompress(data, threads=threads), block)
    other = em_like((6, 64, 72), seed=12)
    other_data = _trained(other, stripes=2)
    for batch in (1, 2, 3):
        out = decompress_many([data, other_data, data], batch=batch, threads=2)
        np.testing.assert_array_equal(out[0], block)
        np.testing.assert_array_equal(out[1], other)
        np.testing.assert_array_equal(out[2], block)


def test_portable_and_avx2_kernels_write_and_read_the_same_bytes(coded: tuple[np.ndarray, bytes]) -> None:
    block, data = coded
    job = _job(data)
    try:
        if compiled.use_kernel("auto") != "avx2":
            pytest.skip("this CPU has no AVX2: only the portable kernel runs here")
        fast = engine.encode_block(block, job.model, job.family, 3)
        compiled.use_kernel("portable")
        assert engine.encode_block(block, job.model, job.family, 3) == fast == job.streams
        np.testing.assert_array_equal(decompress(data, threads=2), block)
    finally:
        compiled.use_kernel("auto")


def test_a_fresh_process_decodes_the_same_bytes(coded: tuple[np.ndarray, bytes], tmp_path: Path) -> None:
    block, data = coded
    (tmp_path / "block.emz").write_bytes(data)
    script = "import sys, hashlib; from codec import decompress; " + (
        "print(hashlib.sha256(decompress(open(sys.argv[1], 'rb').read()).tobytes()).hexdigest())"
    )
    command = [sys.executable, "-c", script, str(tmp_path / "block.emz")]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256(block.tobytes()).hexdigest()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_decoder_agrees_with_the_engine_on_random_blocks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (3, int(rng.integers(33, 48)), int(rng.integers(5, 30)))
    block = rng.integers(0, 256, shape, dtype=np.uint8) if seed == 2 else em_like(shape, seed=seed)
    data = _trained(block, stripes=2, family=("laplace", "gaussian")[seed % 2])
    job = _job(data)
    np.testing.assert_array_equal(reference.decode(job.streams, job.shape, job.model, job.family), block)
    np.testing.assert_array_equal(decompress(data), block)


def test_engine_context_matches_the_training_features() -> None:
    """The context the engine codes with is the one training sees (codec.v4.context.features)."""
    block = em_like((3, 40, 30), seed=4)
    context = make_context(1, 0, 2)
    z, y, x = (a.ravel() for a in np.meshgrid(*(np.arange(n) for n in block.shape), indexing="ij"))
    f = features(block, context, 2, z, y, x)
    # A voxel's in-slice causal inputs never read the voxel itself or a later one.
    assert f.shape == (block.size, context.inputs)
    first = (z == 0) & (y == 0) & (x == 0)
    assert np.all(f[first] == 0)
    assert len(DEFAULT_CONTEXT.previous) == 10 and len(DEFAULT_CONTEXT.current) == 24


def test_a_model_that_could_overflow_is_refused(coded: tuple[np.ndarray, bytes]) -> None:
    _, data = coded
    model = _job(data).model.copy()
    model[8 + 3 * 10 + 2 * 24] = 32767 * 4  # first layer-1 weight outside int16
    with pytest.raises(BoundError):
        check_bounds(model)
    with pytest.raises(ValueError, match="malformed model"):
        block = np.zeros((2, 16, 16), np.uint8)
        compiled.encode_stripe(block, 2, 16, 16, 0, 16, model, coder_tables("laplace").cum, coder_tables("laplace").lut)


def test_a_damaged_stream_is_an_emzip_error(coded: tuple[np.ndarray, bytes]) -> None:
    block, data = coded
    parsed = container.unpack(data)
    job = _job(data)
    short = [job.streams[0][:-8], *job.streams[1:]]
    with pytest.raises((CorruptDataError, engine.StreamError)):
        engine.decode_blocks([(short, job.shape, job.model, job.family)])
    # Same words, reordered stripes: every CRC holds, the block's SHA-256 does not.
    swapped = [job.streams[1], job.streams[0], job.streams[2]]
    payload = struct.pack("<I", 3) + b"".join(struct.pack("<II", zlib.crc32(s), len(s) // 4) + s for s in swapped)
    forged = container.pack(container.Container(parsed.header, parsed.config, parsed.model, payload))
    with pytest.raises(CorruptDataError):
        decompress(forged)
    assert block.shape == job.shape
