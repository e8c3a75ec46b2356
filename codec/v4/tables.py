"""The v4 coder's tables: 20-bit rANS frequencies over the 256 residuals around floor(mean).

A voxel whose model gives mean4 (the mean in quarter grey levels) and scale index s is coded as
the residual r = (grey - base + 128) mod 256 with base = floor(mean4 / 4), i.e. the offset
d = r - 128 in [-128, 127] (wrap-around: every grey level has exactly one residual). Row
s * 4 + (mean4 mod 4) of the table holds the masses of those offsets from
:func:`codec.tables.mass_table` at the mean fraction (mean4 mod 4) / 4 (exact integers, no
libm), quantized to sum to 2**20 with every residual at least 1: frequency = 1 +
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
#: Mean fractions the v4 tables keep (quarter grey levels): a quarter of the rows, a table that
#: stays in the CPU's cache, at a cost below 0.001 bit per voxel for EM noise levels.
MEAN_FRACTIONS = 4


@dataclass(frozen=True)
class CoderTables:
    """cum: (rows, 257) uint32 cumulative frequencies. lut: (rows, 2**LUT_BITS) uint64, for the first
    symbol s whose interval reaches each bucket of slots: s | cum[s] << 8 | freq[s] << 32 (the
    decoder's search starts there and usually ends there)."""

    cum: np.ndarray
    lut: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.cum.shape[0])


def _frequencies(family: str) -> np.ndarray:
    every = tables.N_FRACTIONS // MEAN_FRACTIONS
    masses = tables.mass_table(family).reshape(N_SCALES, tables.N_FRACTIONS, tables.N_OFFSETS)[:, ::every]
    masses = masses.reshape(N_SCALES * MEAN_FRACTIONS, tables.N_OFFSETS).astype(np.int64)
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
    symbol = np.empty((freq.shape[0], 1 << LUT_BITS), np.int64)
    for row in range(freq.shape[0]):
        symbol[row] = np.searchsorted(cum[row], slots, side="right") - 1
    start = np.take_along_axis(cum.astype(np.int64), symbol, axis=1)
    lut = (symbol | (start << 8) | (np.take_along_axis(freq, symbol, axis=1) << 32)).astype(np.uint64)
    for array in (cum, lut):
        array.setflags(write=False)
    return CoderTables(cum, lut)


def warm() -> None:
    """Build both families' tables now (about 1.5 s each), e.g. in a worker before its first block."""
    for family in ("laplace", "gaussian"):
        coder_tables(family)


def tables_sha256(family: str) -> str:
    """Fingerprint of a family's v4 tables (a test pins it: a change cannot slip by)."""
    t = coder_tables(family)
    return hashlib.sha256(t.cum.astype("<u4").tobytes() + t.lut.astype("<u8").tobytes()).hexdigest()
