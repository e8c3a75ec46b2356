"""A plain-Python decoder of v4 learned streams: the format written out voxel by voxel.

It shares nothing with the compiled engine but the tables (:mod:`codec.v4.tables`) and the
model array's layout (:func:`codec.v4.freeze.unpack`): context, integer model and rANS are
written again here from docs/format.md, with Python integers, in the plainest order. It is
about 10^4 times slower than the engine and exists so that the tests can show the engine
decodes exactly what the format says (every v4 golden file and random blocks).
"""

from __future__ import annotations

import numpy as np

from codec.v4.context import stripe_starts
from codec.v4.freeze import unpack
from codec.v4.tables import PROB_BITS, coder_tables

RANS_L = 1 << 31


def _act(value: int, shift: int) -> int:
    return min(255, (max(value, 0) + (1 << (shift - 1))) >> shift)


class _Model:
    def __init__(self, array: np.ndarray) -> None:
        p = unpack(array)
        self.hidden = int(p["hidden"])  # type: ignore[arg-type]
        self.shift1, self.shift2 = int(p["shift1"]), int(p["shift2"])  # type: ignore[arg-type]
        self.shift_mean, self.shift_scale = int(p["shift_mean"]), int(p["shift_scale"])  # type: ignore[arg-type]
        self.n_scales = int(p["n_scales"])  # type: ignore[arg-type]
        h = self.hidden

        def ints(name: str) -> list[int]:
            return [int(v) for v in np.asarray(p[name])]

        self.previous = [tuple(o) for o in np.asarray(p["previous"]).reshape(-1, 3).tolist()]
        self.current = [tuple(o) for o in np.asarray(p["current"]).reshape(-1, 2).tolist()]
        w1 = ints("w1p") + ints("w1c")
        self.w1 = [w1[k * h : (k + 1) * h] for k in range(len(w1) // h)]
        self.b1, self.b2, self.b3 = ints("b1"), ints("b2"), ints("b3")
        w2 = ints("w2")
        self.w2 = [w2[i * h : (i + 1) * h] for i in range(h)]
        w3 = ints("w3")
        self.w3 = [w3[:h], w3[h:]]
        self.skip = ints("wsp") + ints("wsc")
        self.skip_bias = ints("bs")[0]

    def predict(self, inputs: list[int]) -> tuple[int, int]:
        """(mean16, scale index) for one voxel's context."""
        h = self.hidden
        acc1 = [self.b1[j] + sum(self.w1[k][j] * inputs[k] for k in range(len(inputs))) for j in range(h)]
        h1 = [_act(a, self.shift1) for a in acc1]
        acc2 = [self.b2[j] + sum(self.w2[i][j] * h1[i] for i in range(h)) for j in range(h)]
        h2 = [_act(a, self.shift2) for a in acc2]
        mean = self.skip_bias + sum(w * c for w, c in zip(self.skip, inputs, strict=True))
        mean += self.b3[0] + sum(w * v for w, v in zip(self.w3[0], h2, strict=True))
        mean16 = ((mean + (1 << (self.shift_mean - 5))) >> (self.shift_mean - 4)) + 2048
        scale = self.b3[1] + sum(w * v for w, v in zip(self.w3[1], h2, strict=True))
        index = (scale + (1 << (self.shift_scale - 1))) >> self.shift_scale
        return min(max(mean16, 0), 4095), min(max(index, 0), self.n_scales - 1)


def _context(out: np.ndarray, model: _Model, z: int, y: int, x: int, first_row: int) -> list[int]:
    _, rows, cols = out.shape
    values = []
    for dz, dy, dx in model.previous:
        if z == 0:
            values.append(0)
        else:
            zz = max(z - dz, 0)
            values.append(int(out[zz, min(max(y + dy, 0), rows - 1), min(max(x + dx, 0), cols - 1)]) - 128)
    for dy, dx in model.current:
        if dy < 0:
            yy = y + dy
            values.append(0 if yy < first_row else int(out[z, yy, min(max(x + dx, 0), cols - 1)]) - 128)
        else:
            values.append(0 if x + dx < 0 else int(out[z, y, x + dx]) - 128)
    return values


def decode(streams: list[bytes], shape: tuple[int, int, int], model_array: np.ndarray, family: str) -> np.ndarray:
    """Decode a v4 learned block from its stripe streams, one voxel at a time."""
    model = _Model(model_array)
    cum = coder_tables(family).cum
    out = np.zeros(shape, np.uint8)
    depth, rows, cols = shape
    starts = stripe_starts(rows, len(streams))
    readers = []
    for stream in streams:
        words = [int(w) for w in np.frombuffer(stream, dtype="<u4")]
        readers.append([words[0] | (words[1] << 32), 2, words])
    mask = (1 << PROB_BITS) - 1
    for z in range(depth):
        for s, reader in enumerate(readers):
            for y in range(int(starts[s]), int(starts[s + 1])):
                for x in range(cols):
                    mean16, index = model.predict(_context(out, model, z, y, x, int(starts[s])))
                    row = [int(v) for v in cum[index * 16 + (mean16 & 15)]]
                    state, pos, words = reader
                    slot = state & mask
                    symbol = next(k for k in range(256) if row[k] <= slot < row[k + 1])
                    state = (row[symbol + 1] - row[symbol]) * (state >> PROB_BITS) + slot - row[symbol]
                    if state < RANS_L:
                        state = (state << 32) | words[pos]
                        pos += 1
                    reader[0], reader[1] = state, pos
                    out[z, y, x] = ((mean16 >> 4) + symbol - 128) & 255
    for s, (state, pos, words) in enumerate(readers):
        if state != RANS_L or pos != len(words):
            raise ValueError(f"stripe {s}: stream does not end where its voxels do")
    return out
