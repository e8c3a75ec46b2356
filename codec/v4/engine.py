"""Glue around the compiled engine (codec/_engine.c): stripes, threads and stream checks.

One engine call codes one stripe of one slice (decoding) or one stripe of the whole block
(encoding); Python never touches a voxel. Stripes of one slice are independent, so a block
decodes on up to ``stripes`` threads (the engine releases the GIL); slices follow each other
because every slice reads the two before it.
"""

from __future__ import annotations

from collections.abc import Callable
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
    jobs: list[tuple[list[bytes], tuple[int, int, int], np.ndarray, str]],
    threads: int = 1,
    on_slice: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Decode several blocks (streams, shape, model, family); their stripes share ``threads`` threads."""
    outputs: list[np.ndarray] = []
    tasks: list[tuple[int, int, int, int, np.ndarray, np.ndarray]] = []  # (block, stripe, y0, y1, words, state)
    for b, (streams, shape, _model, _family) in enumerate(jobs):
        outputs.append(np.zeros(shape, np.uint8))
        starts = stripe_starts(shape[1], len(streams))
        for s, stream in enumerate(streams):
            tasks.append((b, s, int(starts[s]), int(starts[s + 1]), _words(stream), np.zeros(2, np.uint64)))
    models = [np.ascontiguousarray(m, dtype=np.int32) for _, _, m, _ in jobs]
    tabs = [coder_tables(f) for _, _, _, f in jobs]
    depth = max((shape[0] for _, shape, _, _ in jobs), default=0)

    def run(task: tuple[int, int, int, int, np.ndarray, np.ndarray], z: int) -> None:
        b, _s, y0, y1, words, state = task
        depth, rows, cols = outputs[b].shape
        if z >= depth:
            return
        try:
            _engine.decode_slice(
                outputs[b], depth, rows, cols, y0, y1, z, models[b], tabs[b].cum, tabs[b].lut, words, state
            )
        except ValueError as exc:
            raise StreamError(f"block {b} slice {z}: {exc}") from exc

    pool = ThreadPoolExecutor(threads) if threads > 1 and len(tasks) > 1 else None
    try:
        for z in range(depth):
            if pool is None:
                for task in tasks:
                    run(task, z)
            else:
                list(pool.map(run, tasks, [z] * len(tasks)))
            if on_slice is not None:
                on_slice(z + 1, depth)
    finally:
        if pool is not None:
            pool.shutdown()
    for b, s, _y0, _y1, words, state in tasks:
        if int(state[0]) != RANS_L or int(state[1]) != words.size:
            raise StreamError(f"block {b} stripe {s}: stream does not end where its voxels do")
    return outputs
