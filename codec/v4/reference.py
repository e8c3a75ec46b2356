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
from codec.v4.freeze import SHIFT_SCALE_CONSTANT, unpack
from codec.v4.tables import MEAN_FRACTIONS, PROB_BITS, coder_tables

RANS_L = 1 << 31


def _act(value: int, shift: int) -> int:
    return min(255, (max(value, 0) + (1 << (shift - 1))) >> shift)


class _Model:
    def __init__(self, array: np.ndarray) -> None:
        m = unpack(array)
        self.hidden, self.n_scales = m.hidden, m.n_scales
        self.shift1, self.shift2, self.shift_mean, self.shift_scale = m.shift1, m.shift2, m.shift_mean, m.shift_scale
        self.previous: list[tuple[int, ...]] = [tuple(o) for o in m.previous.tolist()]
        self.current: list[tuple[int, ...]] = [tuple(o) for o in m.current.tolist()]
        self.w1: list[list[int]] = m.w1.tolist()
        self.w2: list[list[int]] = m.w2.tolist()
        self.w3: list[list[int]] = m.w3.tolist()
        self.b1: list[int] = m.b1.tolist()
        self.b2: list[int] = m.b2.tolist()
        self.b3: list[int] = m.b3.tolist()
        self.skip: list[int] = m.skip.tolist()
        self.skip_bias = m.skip_bias

    def predict(self, inputs: list[int]) -> tuple[int, int]:
        """(mean4, scale index) for one voxel's context."""
        h = self.hidden
        acc1 = [self.b1[j] + sum(self.w1[k][j] * inputs[k] for k in range(len(inputs))) for j in range(h)]
        h1 = [_act(a, self.shift1) for a in acc1]
        acc2 = [self.b2[j] + sum(self.w2[i][j] * h1[i] for i in range(h)) for j in range(h)]
        h2 = [_act(a, self.shift2) for a in acc2]
        mean = self.skip_bias + sum(w * c for w, c in zip(self.skip, inputs, strict=True))
        mean += self.b3[0] + sum(w * v for w, v in zip(self.w3[0], h2, strict=True))
        mean4 = ((mean + (1 << (self.shift_mean - 3))) >> (self.shift_mean - 2)) + 512
        scale = self.b3[1] + sum(w * v for w, v in zip(self.w3[1], h2, strict=True))
        index = (scale + (1 << (self.shift_scale - 1))) >> self.shift_scale
        if self.shift_scale == SHIFT_SCALE_CONSTANT:  # docs/format.md: every voxel takes scale index 0
            index = 0
        return min(max(mean4, 0), 1023), min(max(index, 0), self.n_scales - 1)


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


class _Reader:
    """rANS decoding of one stripe's words (64-bit state, 32-bit words, 20-bit frequencies)."""

    def __init__(self, words: list[int]) -> None:
        self.words = words
        self.state = words[0] | (words[1] << 32)
        self.pos = 2

    def decode(self, cum: list[int]) -> int:
        slot = self.state & ((1 << PROB_BITS) - 1)
        symbol = next(k for k in range(256) if cum[k] <= slot < cum[k + 1])
        self.state = (cum[symbol + 1] - cum[symbol]) * (self.state >> PROB_BITS) + slot - cum[symbol]
        if self.state < RANS_L:
            self.state = (self.state << 32) | self.words[self.pos]
            self.pos += 1
        return symbol


def decode(streams: list[bytes], shape: tuple[int, int, int], model_array: np.ndarray, family: str) -> np.ndarray:
    """Decode a v4 learned block from its stripe streams, one voxel at a time."""
    model = _Model(model_array)
    cum = coder_tables(family).cum
    out = np.zeros(shape, np.uint8)
    depth, rows, cols = shape
    starts = stripe_starts(rows, len(streams))
    readers = [_Reader([int(w) for w in np.frombuffer(stream, dtype="<u4")]) for stream in streams]
    for z in range(depth):
        for s, reader in enumerate(readers):
            for y in range(int(starts[s]), int(starts[s + 1])):
                for x in range(cols):
                    mean4, index = model.predict(_context(out, model, z, y, x, int(starts[s])))
                    row = [int(v) for v in cum[index * MEAN_FRACTIONS + mean4 % MEAN_FRACTIONS]]
                    symbol = reader.decode(row)
                    out[z, y, x] = ((mean4 >> 2) + symbol - 128) & 255
    for s, reader in enumerate(readers):
        if reader.state != RANS_L or reader.pos != len(reader.words):
            raise ValueError(f"stripe {s}: stream does not end where its voxels do")
    return out
