"""Which neighbours a voxel sees in format v4, and those neighbours as a training matrix.

A context is two lists of offsets, both fixed per container (CONF) and checked on read:

- previous slices: (dz, dy, dx) with dz in {1, 2} and |dy|, |dx| <= 3. They read slice
  max(z - dz, 0) with coordinates clamped into the slice; every one reads 0 in slice 0.
- this slice, causal: (dy, dx) with dy < 0, or dy == 0 and dx < 0; |dy|, |dx| <= 3. A row above
  the voxel's stripe reads 0; in a row above the voxel, x is clamped into the slice; in the
  voxel's own row, x < 0 reads 0.

Every input is grey - 128. A block is cut into ``stripes`` bands of rows (row y0 of stripe s
is s * Y // stripes) that are coded as independent streams, so a decoder can run them on
separate threads; a stripe never sees rows of the stripe above it in the current slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARGIN = 3
MAX_INPUTS = 64
#: Largest extent of a v4 learned block along any axis (docs/format.md). A decoding thread's
#: scratch grows with the row width, so readers refuse more before allocating, writers never
#: write more (such blocks take the classic path).
MAX_EXTENT = 1 << 16


@dataclass(frozen=True)
class Context:
    """The offsets a model reads (see the module docstring)."""

    previous: tuple[tuple[int, int, int], ...]
    current: tuple[tuple[int, int], ...]

    @property
    def inputs(self) -> int:
        return len(self.previous) + len(self.current)

    @classmethod
    def from_json(cls, raw: object) -> Context:
        """Parse and check a CONF context; ValueError names what is wrong."""
        if not isinstance(raw, dict):
            raise ValueError("context is not an object")
        try:
            previous = tuple((int(a), int(b), int(c)) for a, b, c in raw["previous"])
            current = tuple((int(a), int(b)) for a, b in raw["current"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"context is malformed: {exc}") from exc
        context = cls(previous, current)
        context.check()
        return context

    def check(self) -> None:
        if len(self.previous) > MAX_INPUTS or len(self.current) > MAX_INPUTS:
            raise ValueError(f"context has more than {MAX_INPUTS} inputs in a group")
        for dz, dy, dx in self.previous:
            if dz not in (1, 2) or abs(dy) > MARGIN or abs(dx) > MARGIN:
                raise ValueError(f"previous-slice offset {(dz, dy, dx)} is out of range")
        for dy, dx in self.current:
            if not (-MARGIN <= dy <= 0 and abs(dx) <= MARGIN and (dy < 0 or dx < 0)):
                raise ValueError(f"in-slice offset {(dy, dx)} is not causal or out of range")
        if len(set(self.previous)) != len(self.previous) or len(set(self.current)) != len(self.current):
            raise ValueError("context repeats an offset")


def make_context(previous_radius: int, before_radius: int, causal_radius: int) -> Context:
    """Previous slice's (2r+1)^2 box, the slice before's box, and this slice's causal half-box."""
    previous = [
        (1, dy, dx)
        for dy in range(-previous_radius, previous_radius + 1)
        for dx in range(-previous_radius, previous_radius + 1)
    ]
    if before_radius >= 0:
        previous += [
            (2, dy, dx)
            for dy in range(-before_radius, before_radius + 1)
            for dx in range(-before_radius, before_radius + 1)
        ]
    current = [(dy, dx) for dy in range(-causal_radius, 0) for dx in range(-causal_radius, causal_radius + 1)]
    current += [(0, dx) for dx in range(-causal_radius, 0)]
    return Context(tuple(previous), tuple(current))


#: The default context: previous slice 3x3, the slice before's centre, this slice's causal
#: radius 3 (34 inputs). Wider boxes of the previous slices buy under 0.2% of bits and cost a
#: quarter of the decode speed (bench/RESULTS.md, v4 context table).
DEFAULT_CONTEXT = make_context(1, 0, 3)


def stripe_starts(rows: int, stripes: int) -> np.ndarray:
    """First row of each stripe, plus ``rows`` at the end."""
    return np.array([s * rows // stripes for s in range(stripes)] + [rows], dtype=np.int64)


def features(
    volume: np.ndarray, context: Context, stripes: int, z: np.ndarray, y: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """(n, inputs) int16: the context of voxels (z, y, x) of a uint8 (Z, Y, X) block, as coded."""
    _, rows, cols = volume.shape
    vol = volume.astype(np.int16) - 128
    out = np.zeros((z.size, context.inputs), np.int16)
    has_prev = z > 0
    for k, (dz, dy, dx) in enumerate(context.previous):
        zz = np.maximum(z - dz, 0)
        values = vol[zz, np.clip(y + dy, 0, rows - 1), np.clip(x + dx, 0, cols - 1)]
        out[:, k] = np.where(has_prev, values, 0)
    starts = stripe_starts(rows, stripes)
    first_row = starts[np.searchsorted(starts, y, side="right") - 1]
    base = len(context.previous)
    for k, (dy, dx) in enumerate(context.current):
        yy = y + dy
        if dy < 0:
            visible = yy >= first_row
            values = vol[z, np.maximum(yy, 0), np.clip(x + dx, 0, cols - 1)]
        else:
            visible = x + dx >= 0
            values = vol[z, y, np.maximum(x + dx, 0)]
        out[:, base + k] = np.where(visible, values, 0)
    return out
