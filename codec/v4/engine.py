"""Glue around the compiled engine (codec/_engine.c): stripes, threads and stream checks.

One engine call decodes a whole block, or encodes one stripe of it; Python never touches a
voxel. Stripes of one slice are independent, so the engine decodes a block on up to ``stripes``
threads of its own (pthreads, the GIL released), slice by slice behind a barrier, because every
slice reads the two before it; encoding runs the stripes on Python threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import codec._engine as _engine
from codec.limits import LimitError, max_decoded_bytes
from codec.v4.context import MARGIN, MAX_EXTENT, stripe_starts
from codec.v4.tables import LUT_BITS, MEAN_FRACTIONS, PROB_BITS, coder_tables

RANS_L = 1 << 31
#: Most threads the engine runs one block on (``decode_block``'s own cap).
MAX_BLOCK_THREADS = 64
if (_engine.PROB_BITS, _engine.LUT_BITS, _engine.MEAN_FRACTIONS, _engine.MARGIN, _engine.MAX_EXTENT) != (
    PROB_BITS,
    LUT_BITS,
    MEAN_FRACTIONS,
    MARGIN,
    MAX_EXTENT,
):
    raise ImportError("codec/_engine was built from another source: run `pip install -e .` again")


class StreamError(ValueError):
    """A stream that ends early, or does not end where its voxels do."""


def _words(stream: bytes) -> np.ndarray:
    if len(stream) % 4:
        raise StreamError(f"stream of {len(stream)} bytes is not whole 32-bit words")
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)


def encode_block(volume: np.ndarray, model: np.ndarray, family: str, stripes: int, threads: int = 1) -> list[bytes]:
    """One rANS stream per stripe for a C-contiguous uint8 (Z, Y, X) block."""
    vol = np.ascontiguousarray(volume, dtype=np.uint8)
    depth, rows, cols = vol.shape
    t = coder_tables(family)
    starts = stripe_starts(rows, stripes)
    model = np.ascontiguousarray(model, dtype=np.int32)

    def one(s: int) -> bytes:
        raw = _engine.encode_stripe(vol, depth, rows, cols, int(starts[s]), int(starts[s + 1]), model, t.cum, t.lut)
        return np.frombuffer(raw, dtype=np.uint32).astype("<u4").tobytes()

    if threads > 1 and stripes > 1:
        with ThreadPoolExecutor(min(threads, stripes)) as pool:
            return list(pool.map(one, range(stripes)))
    return [one(s) for s in range(stripes)]


def scratch_bytes(shape: tuple[int, int, int], stripes: int, hidden: int) -> int:
    """What one decoding thread of the engine allocates for a block (``alloc_scratch``, ``prepare``):
    two padded previous-slice planes and the current one (int16) of its tallest stripe, and the
    layer-1 sums of a row (int32, hidden + 8 per voxel), plus the rearranged weights."""
    rows = int(max(np.diff(stripe_starts(shape[1], stripes))))
    width = shape[2] + 2 * MARGIN
    planes = 2 * (2 * (rows + 2 * MARGIN) * width) + 2 * (rows + MARGIN) * width
    weights = 2 * (_engine.MAX_INPUTS + 8) * hidden * 2 + 2 * hidden * hidden + 8 * hidden
    return planes + 4 * shape[2] * (hidden + 8) + weights


def block_threads(threads: int, blocks: int, stripes: int) -> int:
    """Threads the engine runs one block on when ``blocks`` blocks share ``threads`` (``decode_blocks``)."""
    if threads > 1 and blocks >= threads:
        return 1
    return max(1, min(threads, stripes, MAX_BLOCK_THREADS))


def decode_bytes(shape: tuple[int, int, int], stripes: int, hidden: int, threads: int) -> int:
    """Bytes a block's decode holds at once: its output and the scratch of each of its threads."""
    used = max(1, min(threads, stripes, MAX_BLOCK_THREADS))
    return shape[0] * shape[1] * shape[2] + used * scratch_bytes(shape, stripes, hidden)


def check_decode_bytes(
    shape: tuple[int, int, int], stripes: int, hidden: int, threads: int, limit: int | None = None
) -> None:
    """Refuse (LimitError) a decode whose output and scratch together pass the decoded-bytes limit."""
    limit = max_decoded_bytes() if limit is None else limit
    need = decode_bytes(shape, stripes, hidden, threads)
    if need > limit:
        output = shape[0] * shape[1] * shape[2]
        raise LimitError(
            f"decoding {shape} needs {need} bytes: {output} of output and {need - output} of scratch for its "
            f"threads, over the limit of {limit} (EMZIP_MAX_DECODED_BYTES)"
        )


def decode_blocks(
    jobs: list[tuple[list[bytes], tuple[int, int, int], np.ndarray, str]], threads: int = 1
) -> list[np.ndarray]:
    """Decode several blocks (streams, shape, model, family) on ``threads`` threads in all.

    One engine call decodes a whole block, its stripes on up to ``threads`` threads (slice by
    slice, behind a barrier: a slice reads the two before it). With more blocks than threads,
    the blocks themselves are spread over the threads, one thread each. The caller has checked
    each block's memory (``check_decode_bytes``) with ``block_threads``.
    """

    def one(job: tuple[list[bytes], tuple[int, int, int], np.ndarray, str], block_threads: int) -> np.ndarray:
        streams, shape, model, family = job
        out = np.zeros(shape, np.uint8)
        starts = stripe_starts(shape[1], len(streams))
        stripes = [(int(starts[s]), int(starts[s + 1]), _words(stream)) for s, stream in enumerate(streams)]
        t = coder_tables(family)
        try:
            _engine.decode_block(
                out, *shape, np.ascontiguousarray(model, dtype=np.int32), t.cum, t.lut, stripes, block_threads
            )
        except ValueError as exc:
            raise StreamError(str(exc)) from exc
        return out

    if threads > 1 and len(jobs) >= threads:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, jobs, [1] * len(jobs)))
    return [one(job, threads) for job in jobs]
