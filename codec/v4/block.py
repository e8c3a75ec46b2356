"""Format v4 learned blocks: train (or warm-start), freeze, code with the engine; and back.

DATA of a v4 learned container: u32 stripe count, then per stripe u32 CRC32 of its words,
u32 word count and the words (u32), all little-endian. MODL: the frozen model's int32 array
(:mod:`codec.v4.freeze`), little-endian, xz-compressed. CONF["engine"]: family, stripes.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from codec.errors import CorruptDataError
from codec.limits import LimitError, check_learned_payload, max_decoded_bytes
from codec.v4 import engine
from codec.v4.context import DEFAULT_CONTEXT, MAX_EXTENT, Context, stripe_starts
from codec.v4.freeze import BoundError, check_bounds, freeze, unpack
from codec.v4.tables import coder_tables

if TYPE_CHECKING:  # training (encode) needs torch; parse and decode never import it
    import torch

FAMILIES = ("laplace", "gaussian")
MAX_STRIPES = 64
_MAX_MODEL_BYTES = 1 << 20
#: Threads one block's encode codes its stripes on. One: a block is a core's work, and an
#: acquisition uses more cores by coding more blocks at once (``flows.edge_scheduler``); two
#: threads per block on a worker per core only made the workers take turns (bench.scaleout).
ENCODE_THREADS = 1
#: Voxels of the sample whose activations set the integer model's scales.
_CALIBRATION = 32_768


@dataclass(frozen=True)
class EncodedBlock:
    """What the container needs, and the float state a next block may warm-start from."""

    model: bytes  # MODL payload
    data: bytes  # DATA payload
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    train_steps: int
    train_seconds: float
    sample_bits: float
    warm: bool


def stripes_for(rows: int, wanted: int) -> int:
    """Stripes of at least 16 rows each (a stripe's first rows see no row above: keep them few)."""
    return max(1, min(wanted, rows // 16, MAX_STRIPES))


def encode(
    block: np.ndarray,
    family: str,
    hidden: int,
    steps: int,
    seed: int,
    stripes: int,
    warm: dict[str, torch.Tensor] | None = None,
    warm_steps: int = 0,
    context: Context = DEFAULT_CONTEXT,
    threads: int = ENCODE_THREADS,
    device: torch.device | None = None,
) -> EncodedBlock:
    """Code a uint8 (Z, Y, X) block; ``warm`` (a previous block's state) replaces the cold start."""
    from codec.v4.train import sample_block, train

    stripes = stripes_for(block.shape[1], stripes)
    if warm is not None and not _fits(warm, context.inputs, hidden):
        warm = None
    sample = sample_block(block, context, stripes, seed)
    result = train(sample, family, hidden, steps, seed, warm, warm_steps, device)
    model = freeze(result.model, context, sample.context[:_CALIBRATION])
    streams = engine.encode_block(block, model, family, stripes, threads)
    _check_density(streams, (block.shape[0], block.shape[1], block.shape[2]))
    data = pack_streams(streams)
    state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    config = {"family": family, "stripes": stripes, "hidden": hidden}
    return EncodedBlock(
        lzma.compress(model.astype("<i4").tobytes(), preset=9),
        data,
        config,
        state,
        result.steps,
        result.seconds,
        result.bits,
        result.warm,
    )


def encode_with_state(
    block: np.ndarray,
    state: dict[str, torch.Tensor],
    family: str,
    stripes: int,
    seed: int,
    context: Context = DEFAULT_CONTEXT,
    threads: int = ENCODE_THREADS,
) -> EncodedBlock | str:
    """Code a block with an acquisition's trained model as it is (``codec.shared``): no family probe,
    no training. Returns why not (a string) when the block's own least-squares model codes a small
    sample in fewer bits than the shared one does: the check a warm start passes in ``train``, on
    ``_CALIBRATION`` voxels instead of the whole training pool. The model is then frozen with this
    block's own calibration (its activations' scales, from the same sample), as a trained block's is."""
    import time

    from codec.v4.model import RasterModel
    from codec.v4.train import least_squares_model, sample_bits, sample_block

    start = time.monotonic()
    hidden = int(state["l1.weight"].shape[0])
    stripes = stripes_for(block.shape[1], stripes)
    model = RasterModel(context.inputs, hidden)
    model.load_state_dict(state)
    model.eval()
    sample = sample_block(block, context, stripes, seed, size=_CALIBRATION)
    shared_bits = sample_bits(model, sample, family)
    own_bits = sample_bits(least_squares_model(sample, family, hidden, seed), sample, family)
    if own_bits < shared_bits:
        return (
            f"the block's own least-squares model codes a {len(sample.target)}-voxel sample in {own_bits:.4f} "
            f"bits/voxel, the acquisition model in {shared_bits:.4f}"
        )
    frozen = freeze(model, context, sample.context)
    streams = engine.encode_block(block, frozen, family, stripes, threads)
    _check_density(streams, (block.shape[0], block.shape[1], block.shape[2]))
    config = {"family": family, "stripes": stripes, "hidden": hidden}
    model_bytes = lzma.compress(frozen.astype("<i4").tobytes(), preset=9)
    return EncodedBlock(
        model_bytes, pack_streams(streams), config, state, 0, time.monotonic() - start, shared_bits, True
    )


def pack_streams(streams: list[bytes], claimed_words: list[int] | None = None) -> bytes:
    """DATA of a v4 learned block: the stripe count, then per stripe its CRC32, word count and words.

    ``claimed_words`` (tests and fuzzing only) writes other word counts than the streams hold.
    """
    claims = claimed_words if claimed_words is not None else [len(s) // 4 for s in streams]
    header = struct.pack("<I", len(streams))
    return header + b"".join(
        struct.pack("<II", zlib.crc32(s), words) + s for s, words in zip(streams, claims, strict=True)
    )


def _fits(state: dict[str, torch.Tensor], inputs: int, hidden: int) -> bool:
    weight = state.get("l1.weight")
    return weight is not None and tuple(weight.shape) == (hidden, inputs)


@dataclass(frozen=True)
class DecodeJob:
    """One parsed, checked v4 learned block, ready for the engine."""

    streams: list[bytes]
    shape: tuple[int, int, int]
    model: np.ndarray
    family: str


def parse(config: dict[str, Any], model: bytes, data: bytes, shape: tuple[int, int, int]) -> DecodeJob:
    """Check CONF, MODL and DATA of a v4 learned block against each other and the format's limits."""
    if not all(1 <= extent <= MAX_EXTENT for extent in shape):
        raise LimitError(f"learned block {shape}: every extent must be 1 to {MAX_EXTENT} (format v4)")
    raw = config.get("engine")
    if not isinstance(raw, dict):
        raise CorruptDataError("CONF has no engine settings")
    family, stripes = raw.get("family"), raw.get("stripes")
    if family not in FAMILIES:
        raise CorruptDataError(f"CONF names unknown distribution family {family!r}")
    if not isinstance(stripes, int) or not 1 <= stripes <= min(MAX_STRIPES, shape[1]):
        raise CorruptDataError(f"CONF stripes {stripes!r} out of range for {shape[1]} rows")
    raw_model = _model_bytes(model)
    if len(raw_model) % 4:
        raise CorruptDataError("model array is not whole int32 values")
    array = np.frombuffer(raw_model, dtype="<i4").astype(np.int32)
    try:
        check_bounds(array)
        parts = unpack(array)
        Context.from_json({"previous": parts.previous.tolist(), "current": parts.current.tolist()})
    except (BoundError, ValueError) as exc:
        raise CorruptDataError(f"model refused: {exc}") from exc
    if raw.get("hidden") != parts.hidden:
        raise CorruptDataError(f"CONF hidden {raw.get('hidden')!r} disagrees with the model's {parts.hidden}")
    streams = _streams(data, stripes)
    _check_density(streams, shape)
    return DecodeJob(streams, shape, array, family)


def _model_bytes(model: bytes) -> bytes:
    """MODL's one xz stream, whole, at most ``_MAX_MODEL_BYTES`` decompressed, nothing after it."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        raw = decompressor.decompress(model, max_length=_MAX_MODEL_BYTES)
    except lzma.LZMAError as exc:
        raise CorruptDataError(f"model weights do not decompress: {exc}") from exc
    if not decompressor.eof:
        if decompressor.needs_input:
            raise CorruptDataError("model weights end inside their xz stream")
        raise LimitError(f"model weights decompress to more than {_MAX_MODEL_BYTES} bytes")
    if decompressor.unused_data:
        raise CorruptDataError(f"{len(decompressor.unused_data)} bytes after the model's xz stream")
    return raw


def _check_density(streams: list[bytes], shape: tuple[int, int, int]) -> None:
    """Each stripe's stream holds at least the format's floor of bits for its voxels (LimitError)."""
    starts = stripe_starts(shape[1], len(streams))
    for s, stream in enumerate(streams):
        rows = int(starts[s + 1] - starts[s])
        check_learned_payload(shape[0] * rows * shape[2], len(stream) // 4, s, unit="stripe")


def _streams(data: bytes, stripes: int) -> list[bytes]:
    if len(data) < 4 or struct.unpack_from("<I", data, 0)[0] != stripes:
        raise CorruptDataError(f"learned payload does not hold {stripes} stripe streams")
    at, out = 4, []
    for s in range(stripes):
        if len(data) - at < 8:
            raise CorruptDataError(f"learned payload ends inside stripe {s}'s header")
        crc, words = struct.unpack_from("<II", data, at)
        at += 8
        if words * 4 > len(data) - at:
            raise CorruptDataError(f"stripe {s} claims {words} words, {len(data) - at} bytes remain")
        stream = data[at : at + 4 * words]
        at += 4 * words
        if zlib.crc32(stream) != crc:
            raise CorruptDataError(f"CRC32 mismatch in stripe {s}'s stream")
        out.append(stream)
    if at != len(data):
        raise CorruptDataError(f"{len(data) - at} unexpected bytes after the last stripe stream")
    return out


def decode(jobs: list[DecodeJob], threads: int = 1, max_bytes: int | None = None) -> list[np.ndarray]:
    """Decode parsed blocks with the engine (their stripes share ``threads`` threads).

    Before anything is allocated, each block's output and its threads' scratch together must fit
    the decoded-bytes limit, ``codec.limits.max_decoded_bytes()`` (LimitError otherwise), or
    ``max_bytes`` where a caller allows more. A smaller ``max_bytes`` bounds the output alone (the
    caller checked it: zarr passes a chunk's exact size); the working memory beyond it is the
    operator's limit to set.
    """
    limit = max_decoded_bytes() if max_bytes is None else max(max_bytes, max_decoded_bytes())
    for job in jobs:
        per_block = engine.block_threads(threads, len(jobs), len(job.streams))
        engine.check_decode_bytes(job.shape, len(job.streams), int(job.model[0]), per_block, limit)
        coder_tables(job.family)
    try:
        return engine.decode_blocks([(j.streams, j.shape, j.model, j.family) for j in jobs], threads)
    except engine.StreamError as exc:
        raise CorruptDataError(f"learned stream is damaged: {exc}") from exc
