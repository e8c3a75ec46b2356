"""The v3 coding order: groups cover every voxel once and see only voxels decoded before them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.legacy import lattice
from codec.legacy.entropy import StreamDecoder, decode_group, encode_groups


@pytest.mark.parametrize(("h", "w"), [(16, 16), (13, 7), (1, 1), (2, 9)])
def test_groups_partition_the_slice(h: int, w: int) -> None:
    seen = np.zeros(h * w, np.int64)
    for g in range(len(lattice.GROUPS)):
        index = lattice.flat_positions(g, h, w).numpy()
        assert index.size == lattice.group_size(g, h, w)
        seen[index] += 1
        assert all(lattice.group_of(int(i) // w, int(i) % w) == g for i in index)
    assert np.all(seen == 1)


def test_every_in_slice_offset_reads_an_earlier_group() -> None:
    for g, group in enumerate(lattice.GROUPS):
        sy, sx = group.step
        for y0, x0 in group.starts:
            for y in range(y0, 16, sy):
                for x in range(x0, 16, sx):
                    for dy, dx in group.offsets:
                        assert lattice.group_of((y + dy) % 16, (x + dx) % 16) < g, (g, y, x, dy, dx)


def test_decoder_inputs_equal_encoder_inputs_for_any_partial_plane() -> None:
    """With only earlier groups filled in, a group's gathered inputs are those of the full plane."""
    rng = np.random.default_rng(0)
    h, w = 23, 29
    full = torch.as_tensor(rng.integers(-128, 128, (1, 2, h, w)), dtype=torch.float32)
    for g in range(len(lattice.GROUPS)):
        partial = full.clone()
        later = torch.zeros(h * w, dtype=torch.bool)
        for later_group in range(g, len(lattice.GROUPS)):
            later[lattice.flat_positions(later_group, h, w)] = True
        partial[0, 1].view(-1)[later] = 0.0
        expected = lattice.neighbours_at_group(lattice.pad(full), g, h, w)
        assert torch.equal(lattice.neighbours_at_group(lattice.pad(partial), g, h, w), expected)


@pytest.mark.parametrize("family", ["gaussian", "laplace"])
def test_windows_and_escapes_round_trip_every_symbol(family: str) -> None:
    """Symbols far outside their windows (escapes), at 0 and 255, under narrow and wide scales."""
    rng = np.random.default_rng(1)
    groups = []
    for n in (0, 1, 500, 3000):
        mean16 = rng.integers(0, 255 * 16 + 1, n)
        scale = rng.integers(0, 128, n)
        symbols = np.where(rng.random(n) < 0.3, rng.choice([0, 255], n), rng.integers(0, 256, n))
        groups.append((symbols, mean16, scale))
    words = encode_groups(family, groups)
    decoder = StreamDecoder(family, words, "windows")
    for symbols, mean16, scale in groups:
        assert np.array_equal(decode_group(decoder, mean16, scale), symbols)
    assert decoder.is_exhausted()
