"""The coder's probability tables: exact integers, pinned, and faithful to their families."""

from __future__ import annotations

import numpy as np
import pytest

from codec import tables
from codec.distributions import N_SCALES, scale_table

#: sha256 of each family's integer table. The tables are built from decimal's correctly rounded
#: exp and int64 arithmetic only, so every machine must produce these exact bytes; a change here
#: means containers written elsewhere would no longer decode.
PINNED = {
    "laplace": "cbba64efc31795198cb66db8860f3114990629a6c000ec861e7e24ed776c1593",
    "gaussian": "041354b2bd8aab4def1a49d0936e27221b9d080423cb131fa4fa1121bbff71be",
}


@pytest.mark.parametrize("family", sorted(PINNED))
def test_table_is_pinned(family: str) -> None:
    assert tables.table_sha256(family) == PINNED[family]


def _reference(family: str, scale: float, fraction: float) -> np.ndarray:
    d = np.arange(tables.OFFSET_MIN, tables.OFFSET_MAX + 1, dtype=np.float64)
    if family == "gaussian":
        return np.exp(-((d - fraction) ** 2) / (2 * scale * scale))

    def cdf(x: np.ndarray) -> np.ndarray:
        return np.where(x < 0, 0.5 * np.exp(np.minimum(x, 0) / scale), 1 - 0.5 * np.exp(-np.maximum(x, 0) / scale))

    return cdf(d + 0.5 - fraction) - cdf(d - 0.5 - fraction)


@pytest.mark.parametrize("family", sorted(PINNED))
def test_table_matches_the_float_formula(family: str) -> None:
    table = tables.mass_table(family).reshape(N_SCALES, tables.N_FRACTIONS, tables.N_OFFSETS)
    assert np.all(table >= 0) and np.all(table == np.floor(table))
    for s in range(0, N_SCALES, 7):
        for phi in range(tables.N_FRACTIONS):
            got = table[s, phi] / 2.0**tables.FRACTION_BITS
            want = _reference(family, float(scale_table()[s]), phi / tables.N_FRACTIONS)
            # Each fixed-point step rounds by 2**-32; the Gaussian's two chained recurrences over
            # 255 steps accumulate about 1e-6 at the widest scales, far below the coder's 2**-24.
            assert np.max(np.abs(got - want)) < 1e-5, (s, phi)


def test_probabilities_pick_the_row_and_window() -> None:
    mean16 = np.array([0, 255 * 16 + 15, 100 * 16 + 8])
    scale = np.array([0, 50, 127])
    probs = tables.probabilities("laplace", mean16, scale)
    assert probs.shape == (3, 256)
    assert np.argmax(probs[0]) == 0 and np.argmax(probs[1]) == 255
    assert abs(int(np.argmax(probs[2])) - 100) <= 1
    # mean 100.5 exactly: symbols 100 and 101 are equally likely (to the last fixed-point unit).
    half = tables.probabilities("laplace", np.array([100 * 16 + 8]), np.array([30]))[0]
    assert abs(half[100] - half[101]) <= 1


#: sha256 of each family's v3 window classes and window tables (float32 exact integers).
PINNED_WINDOWS = {
    "gaussian": "c174bda2e4404866145dee757c099ca91177e1bc7526d4ba551cf301c598831c",
    "laplace": "7a60991bf2c734d3990563f0cb3565fa1a859e4203e284056051d256e0ea7401",
}


@pytest.mark.parametrize("family", sorted(PINNED_WINDOWS))
def test_window_tables_are_pinned_exact_and_widen_with_scale(family: str) -> None:
    assert tables.window_sha256(family) == PINNED_WINDOWS[family]
    classes = tables.window_classes(family)
    assert np.all(np.diff(classes) >= 0), "wider distributions never take narrower windows"
    for width in tables.WINDOW_WIDTHS:
        table = tables.window_table(family, width)
        assert table.dtype == np.float32 and np.all(table == np.floor(table))
        assert np.all(table.astype(np.float64).sum(axis=1) < 2**24)  # every row sum exact in float32
        assert np.all(table[:, -1] >= 1)  # an escape is always codable
