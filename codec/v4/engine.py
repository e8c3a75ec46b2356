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
from codec.v4.context import stripe_starts
from codec.v4.tables import LUT_BITS, MEAN_FRACTIONS, PROB_BITS, coder_tables

RANS_L = 1 << 31
if (_engine.PROB_BITS, _engine.LUT_BITS, _engine.MEAN_FRACTIONS) != (PROB_BITS, LUT_BITS, MEAN_FRACTIONS):
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


def decode_blocks(
    jobs: list[tuple[list[bytes], tuple[int, int, int], np.ndarray, str]], threads: int = 1
) -> list[np.ndarray]:
    """Decode several blocks (streams, shape, model, family) on ``threads`` threads in all.

    One engine call decodes a whole block, its stripes on up to ``threads`` threads (slice by
    slice, behind a barrier: a slice reads the two before it). With more blocks than threads,
    the blocks themselves are spread over the threads, one thread each.
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
