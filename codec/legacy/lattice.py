"""The v3 coding order inside a slice: five lattice groups, each coded in one parallel step.

Slices are coded in z order. Inside a slice the voxels fall into five groups of a 4x4 lattice
hierarchy, coded one after another; every voxel of a group is predicted from the previous
slices and from voxels of *earlier* groups only, on all sides, so a whole group is one
vectorized model call and one entropy-coder call, whatever the slice's size::

    y % 4, x % 4     group   share   sees in its own slice
    (0, 0)           0       1/16    nothing (previous slices only)
    (2, 2)           1       1/16    group 0 at the diagonals
    (0, 2), (2, 0)   2       2/16    groups 0-1: the 2x2-spaced lattice around it
    (odd, odd)       3       4/16    every even-even voxel
    y + x odd        4       8/16    every voxel with y + x even

A group is a union of rectangular sub-lattices (start y, start x; step sy, sx), visited
sub-lattice after sub-lattice, row-major: that is the order of its voxels in the stream. Every
offset below is defined once here and turned into flat gather indices that the trainer, the
encoder and the decoder all use, so they cannot disagree about what a voxel sees. A test checks
that no offset reaches a voxel that is not decoded yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Group:
    """One coding step: where its voxels lie and which in-slice neighbours they see."""

    starts: tuple[tuple[int, int], ...]
    step: tuple[int, int]
    offsets: tuple[tuple[int, int], ...]


def _ring(points: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Every sign combination of each (dy, dx), without repeats, in a fixed order."""
    out: list[tuple[int, int]] = []
    for dy, dx in points:
        for sy in (-1, 1):
            for sx in (-1, 1):
                p = (sy * dy, sx * dx)
                if p not in out:
                    out.append(p)
    return tuple(out)


GROUPS: tuple[Group, ...] = (
    Group(((0, 0),), (4, 4), ()),
    Group(((2, 2),), (4, 4), _ring(((2, 2), (2, 6), (6, 2)))),
    Group(((0, 2), (2, 0)), (4, 4), _ring(((0, 2), (2, 0), (2, 4), (4, 2)))),
    Group(((1, 1),), (2, 2), _ring(((1, 1), (1, 3), (3, 1)))),
    Group(((0, 1), (1, 0)), (2, 2), _ring(((0, 1), (1, 0), (1, 2), (2, 1)))),
)
#: Neighbourhood taken raw from the previous slice (fully decoded before the slice starts).
PREV_OFFSETS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
#: Zero padding around a plane: enough for every offset above.
PAD = 6
#: Grey value subtracted from voxels before they enter the model (zero padding = mid grey).
CENTER = 128


def group_of(y: int, x: int) -> int:
    """The group that codes voxel (y, x)."""
    for index, group in enumerate(GROUPS):
        sy, sx = group.step
        if any(y % sy == y0 and x % sx == x0 for y0, x0 in group.starts):
            return index
    raise AssertionError("the groups cover every voxel")  # pragma: no cover


def head_input_width(group: int, trunk_channels: int) -> int:
    """Inputs of a group's head: trunk features, previous-slice window, in-slice neighbours."""
    return trunk_channels + len(PREV_OFFSETS) + len(GROUPS[group].offsets)


def pad(planes: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., H + 2 PAD, W + 2 PAD), zero (mid grey) outside."""
    return F.pad(planes, (PAD, PAD, PAD, PAD))


def _positions(group: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of the group's voxels in stream order: sub-lattice after sub-lattice, row-major."""
    g = GROUPS[group]
    sy, sx = g.step
    ys, xs = [], []
    for y0, x0 in g.starts:
        yy, xx = np.meshgrid(np.arange(y0, h, sy), np.arange(x0, w, sx), indexing="ij")
        ys.append(yy.ravel())
        xs.append(xx.ravel())
    return np.concatenate(ys), np.concatenate(xs)


@lru_cache(maxsize=64)
def _indices(group: int, h: int, w: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat indices of one group in an (h, w) slice: into the plane, into the padded plane,
    and (R, n) of every raw input into the two stacked padded planes (previous, current)."""
    y, x = _positions(group, h, w)
    wp = w + 2 * PAD
    plane_size = (h + 2 * PAD) * wp
    padded = (y + PAD) * wp + (x + PAD)
    raw = [padded + dy * wp + dx for dy, dx in PREV_OFFSETS]
    raw += [plane_size + padded + dy * wp + dx for dy, dx in GROUPS[group].offsets]
    to = torch.device(device)
    return (
        torch.as_tensor(y * w + x, device=to),
        torch.as_tensor(padded, device=to),
        torch.as_tensor(np.stack(raw), device=to),
    )


def flat_positions(group: int, h: int, w: int) -> torch.Tensor:
    """Flat indices y * w + x of the group's voxels in an (h, w) slice, in stream order."""
    return _indices(group, h, w, "cpu")[0]


def group_size(group: int, h: int, w: int) -> int:
    """Number of voxels of a group in an (h, w) slice."""
    return int(_positions(group, h, w)[0].size)


@lru_cache(maxsize=256)
def _batched(kind: int, group: int, h: int, w: int, rows: int, device: str) -> torch.Tensor:
    """One of :func:`_indices`' index sets repeated for ``rows`` rows of a flattened tensor."""
    index = _indices(group, h, w, device)[kind]
    row_size = h * w if kind == 0 else 2 * (h + 2 * PAD) * (w + 2 * PAD)
    base = torch.arange(rows, device=index.device).reshape(-1, *([1] * index.dim())) * row_size
    return (base + index).reshape(-1)


def gather(plane: torch.Tensor, group: int) -> torch.Tensor:
    """The values of a (..., H, W) plane at the group's voxels, (..., n) in stream order."""
    h, w = plane.shape[-2:]
    lead = plane.shape[:-2]
    rows = int(np.prod(lead)) if lead else 1
    index = _batched(0, group, h, w, rows, str(plane.device))
    return plane.reshape(-1).index_select(0, index).reshape(*lead, -1)


def scatter_padded(padded: torch.Tensor, group: int, h: int, w: int, values: torch.Tensor) -> None:
    """Write (B, n) ``values`` (stream order) into the group's voxels of (B, H + 2 PAD, W + 2 PAD)."""
    index = _indices(group, h, w, str(padded.device))[1]
    padded.view(padded.shape[0], -1).index_copy_(1, index, values)


def neighbours_at_group(planes: torch.Tensor, group: int, h: int, w: int) -> torch.Tensor:
    """Raw inputs of the group's voxels: (B, 2, H + 2 PAD, W + 2 PAD) padded planes (previous
    slice, current slice) -> (B, len(PREV_OFFSETS) + len(offsets), n): the previous-slice
    window then the in-slice neighbours. In the current plane only earlier groups are read."""
    b = planes.shape[0]
    index = _batched(2, group, h, w, b, str(planes.device))
    return planes.reshape(-1).index_select(0, index).reshape(b, len(PREV_OFFSETS) + len(GROUPS[group].offsets), -1)


def previous_slices(volume: torch.Tensor, k: int) -> torch.Tensor:
    """(Z, H, W) centred slices -> (Z, k, H, W), channel j holding slice z-1-j (zero before 0)."""
    z, h, w = volume.shape
    out = volume.new_zeros((z, k, h, w))
    for j in range(k):
        shift = j + 1
        if shift < z:
            out[shift:, j] = volume[: z - shift]
    return out
