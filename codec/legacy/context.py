"""The v1/v2 coding order (row passes), kept for decoding those containers; v3 uses codec.legacy.lattice.

Coding order inside a block: slice by slice (z ascending); inside a slice row by row (y
ascending); inside a row three passes over interleaved columns (see :data:`PASSES`). Every
voxel sees the previous ``k`` slices completely and the two rows above it in its own slice;
later passes also see the voxels of earlier passes in their own row.

Every offset below is listed once and used by both the whole-block feature builder (training
and encoding, all voxels at once) and the row builder (decoding, one row pass at a time), so
the two cannot disagree about what a voxel sees.
"""

from __future__ import annotations

import numpy as np

#: The passes of a row, in coding order, as (period, residue): pass p codes the columns x with
#: x % period == residue. Pass 0 codes every 4th column from the rows above alone; pass 1 the
#: columns halfway between, also seeing pass 0's voxels two columns away; pass 2 the odd
#: columns, seeing both even neighbours.
PASSES: tuple[tuple[int, int], ...] = ((4, 0), (4, 2), (2, 1))
#: In-slice neighbours (dy, dx) every pass sees: the two rows above.
ROWS_ABOVE: tuple[tuple[int, int], ...] = (
    (-1, -3),
    (-1, -2),
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (-1, 2),
    (-1, 3),
    (-2, -2),
    (-2, -1),
    (-2, 0),
    (-2, 1),
    (-2, 2),
)
#: Neighbours in the voxel's own row, already coded by earlier passes.
SAME_ROW: tuple[tuple[tuple[int, int], ...], ...] = (
    (),
    ((0, -2), (0, 2), (0, -6), (0, 6)),
    ((0, -1), (0, 1), (0, -3), (0, 3), (0, -5), (0, 5)),
)
#: Neighbourhood taken raw from the previous slice (it is fully known).
PREV_OFFSETS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
#: Padding of the row-decoding buffer: enough for every offset above.
PAD_Y = 2
PAD_X = 6
#: Grey value subtracted from voxels before they enter the model (so zero padding means mid grey).
CENTER = 128
#: Centred voxels enter the model as integers with real value v / 2**INPUT_EXP.
INPUT_EXP = 6


def pass_offsets(pass_index: int) -> tuple[tuple[int, int], ...]:
    """The in-slice offsets visible to voxels of pass ``pass_index``."""
    return ROWS_ABOVE + SAME_ROW[pass_index]


def pass_columns(width: int, pass_index: int) -> np.ndarray:
    """The column indices that pass ``pass_index`` codes in a row of ``width`` voxels."""
    period, residue = PASSES[pass_index]
    return np.arange(residue, width, period)


def head_input_width(pass_index: int, trunk_channels: int) -> int:
    """Number of inputs of the per-voxel head of one pass."""
    return trunk_channels + len(PREV_OFFSETS) + len(pass_offsets(pass_index))


def padded_plane(height: int, width: int) -> np.ndarray:
    """An all-zero (mid grey) decoding buffer for one slice with room for every offset."""
    return np.zeros((height + 2 * PAD_Y, width + 2 * PAD_X), dtype=np.float64)


def row_neighbour_features(
    current_padded: np.ndarray, previous_padded: np.ndarray, row: int, pass_index: int
) -> np.ndarray:
    """The raw causal neighbours (previous-slice window, then in-slice offsets) of one row pass.

    Returns (n_columns_in_pass, F). Voxels not yet decoded are zero in ``current_padded``; by
    construction of the offsets none of them is read.
    """
    width = current_padded.shape[1] - 2 * PAD_X
    cols = pass_columns(width, pass_index) + PAD_X
    y = row + PAD_Y
    parts = [previous_padded[y + dy, cols + dx] for dy, dx in PREV_OFFSETS]
    parts += [current_padded[y + dy, cols + dx] for dy, dx in pass_offsets(pass_index)]
    return np.stack(parts, axis=1)
