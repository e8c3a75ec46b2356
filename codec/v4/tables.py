"""The v4 coder's tables: 20-bit rANS frequencies over the 256 residuals around floor(mean).

A voxel with integer mean base = floor(mean16 / 16), fraction f = mean16 % 16 and scale index s
is coded as the residual r = (grey - base + 128) mod 256, i.e. the offset d = r - 128 in
[-128, 127] (wrap-around: every grey level has exactly one residual). Row s * 16 + f of the
table holds the masses of those offsets from :func:`codec.tables.mass_table` (exact integers,
no libm), quantized to sum to 2**20 with every residual at least 1: frequency = 1 +
floor(mass * (2**20 - 256) / total), the rounding remainder added to the most probable offset.
Only integer arithmetic, so every machine builds the same bytes (pinned by a test).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from codec import tables
from codec.distributions import N_SCALES

PROB_BITS = 20
LUT_BITS = 10
N_SYMBOLS = 256
N_FRACTIONS = tables.N_FRACTIONS


@dataclass(frozen=True)
class CoderTables:
    """cum: (rows, 257) uint32 cumulative frequencies; lut: (rows, 2**LUT_BITS) uint8 search starts."""

    cum: np.ndarray
    lut: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.cum.shape[0])


def _frequencies(family: str) -> np.ndarray:
    masses = tables.mass_table(family).reshape(N_SCALES * N_FRACTIONS, tables.N_OFFSETS).astype(np.int64)
    first = -128 - tables.OFFSET_MIN
    window = masses[:, first : first + N_SYMBOLS]
    total = window.sum(axis=1, keepdims=True)
    spare = (1 << PROB_BITS) - N_SYMBOLS
    freq = 1 + (window * spare) // np.maximum(total, 1)
    remainder = (1 << PROB_BITS) - freq.sum(axis=1)
    freq[np.arange(freq.shape[0]), window.argmax(axis=1)] += remainder
    return freq


@lru_cache(maxsize=2)
def coder_tables(family: str) -> CoderTables:
    """The read-only tables of ``family`` ("laplace" or "gaussian")."""
    freq = _frequencies(family)
    cum = np.zeros((freq.shape[0], N_SYMBOLS + 1), np.uint32)
    cum[:, 1:] = np.cumsum(freq, axis=1)
    slots = np.arange(1 << LUT_BITS, dtype=np.int64) << (PROB_BITS - LUT_BITS)
    lut = np.empty((freq.shape[0], 1 << LUT_BITS), np.uint8)
    for row in range(freq.shape[0]):
        lut[row] = np.searchsorted(cum[row], slots, side="right") - 1
    for array in (cum, lut):
        array.setflags(write=False)
    return CoderTables(cum, lut)


def tables_sha256(family: str) -> str:
    """Fingerprint of a family's v4 tables (a test pins it: a change cannot slip by)."""
    t = coder_tables(family)
    return hashlib.sha256(t.cum.astype("<u4").tobytes() + t.lut.tobytes()).hexdigest()


def ideal_bits(family: str, residual_rows: np.ndarray, residuals: np.ndarray) -> float:
    """Ideal code length in bits of ``residuals`` (0..255) coded with table rows ``residual_rows``."""
    cum = coder_tables(family).cum.astype(np.int64)
    freq = cum[residual_rows, residuals + 1] - cum[residual_rows, residuals]
    return float(np.sum(PROB_BITS - np.log2(freq)))
