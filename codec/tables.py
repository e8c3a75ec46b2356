"""Exact integer probability tables: what the entropy coder sees, computed without libm.

The coder never evaluates exp or erf. For every (scale index, 1/16 fraction of the mean) pair
it looks up integer masses for the symbol offsets d = symbol - floor(mean) in [-255, 255]:

- ``laplace``: the Laplace distribution integrated over unit bins, P(d) = F(d + 1/2 - f) -
  F(d - 1/2 - f) with f the fractional part of the mean. Its tails are geometric, so the CDF
  at every bin edge follows from three seeds per (scale, fraction) by integer recurrences.
- ``gaussian``: the Gaussian density sampled at the integers, P(d) ∝ exp(-(d - f)^2 / 2s^2),
  whose successive ratios are themselves geometric: again integer recurrences from seeds.

The seeds come from :mod:`decimal` (correctly rounded, pure software) and every later step is
int64 fixed-point arithmetic with round-half-up, so the tables are bit-identical on every
machine, OS and Python build. The coder receives them as float64 integers (exact) and
constriction's categorical model normalizes them with plain IEEE arithmetic.
"""

from __future__ import annotations

import hashlib
from decimal import Context, Decimal
from functools import lru_cache

import numpy as np

from codec.distributions import MEAN_FRACTION_BITS, scale_numerators

#: Fixed-point precision of every table entry: masses are integers out of 2**FRACTION_BITS.
FRACTION_BITS = 31
_ONE = 1 << FRACTION_BITS
_HALF = 1 << (FRACTION_BITS - 1)
#: Symbol offsets from floor(mean) that a uint8 symbol can have.
OFFSET_MIN = -255
OFFSET_MAX = 255
N_OFFSETS = OFFSET_MAX - OFFSET_MIN + 1
N_FRACTIONS = 1 << MEAN_FRACTION_BITS
_DECIMAL = Context(prec=34)


def _fixed(value: Decimal) -> int:
    """round(value * 2**FRACTION_BITS) for 0 <= value <= 1, exactly."""
    return int((value * _ONE).to_integral_value(rounding="ROUND_HALF_UP"))


def _exp_fixed(exponent: Decimal) -> int:
    """exp(exponent) in fixed point, through decimal's correctly rounded exp."""
    return _fixed(_DECIMAL.exp(exponent))


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fixed-point product with round-half-up; inputs <= 2**31 so int64 never overflows."""
    return (a * b + _HALF) >> FRACTION_BITS


def _geometric(start: np.ndarray, ratio: np.ndarray, count: int) -> np.ndarray:
    """(rows, count): start, start*ratio, start*ratio**2, ... per row, in fixed point."""
    out = np.empty((start.size, count), np.int64)
    value = start.astype(np.int64)
    for j in range(count):
        out[:, j] = value
        value = _mul(value, ratio)
    return out


def _products(start: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """(rows, 1 + n): start, start*ratios[:, 0], start*ratios[:, 0]*ratios[:, 1], ..."""
    out = np.empty((start.size, ratios.shape[1] + 1), np.int64)
    out[:, 0] = start
    for j in range(ratios.shape[1]):
        out[:, j + 1] = _mul(out[:, j], ratios[:, j])
    return out


def _scales() -> list[Decimal]:
    """The scale table's values as exact decimals (they are integers / 2**20)."""
    return [Decimal(n) / Decimal(1 << 20) for n in scale_numerators()]


def _mean_fractions() -> list[tuple[int, Decimal]]:
    """(d0, f) per fraction index: f the mean's fractional part, d0 the integer nearest it."""
    out = []
    for phi in range(N_FRACTIONS):
        f = Decimal(phi) / Decimal(N_FRACTIONS)
        out.append((0 if 2 * phi <= N_FRACTIONS else 1, f))
    return out


def _assemble(lower: np.ndarray, upper: np.ndarray, d0: np.ndarray, width: int) -> np.ndarray:
    """Join a row's left part (reversed, offsets below d0) and right part (from d0 on)."""
    rows = np.empty((d0.size, width), np.int64)
    for peak in (0, 1):
        sel = d0 == peak
        n_left = peak - OFFSET_MIN + (width - N_OFFSETS)
        rows[sel] = np.concatenate([lower[sel, :n_left][:, ::-1], upper[sel, : width - n_left]], axis=1)
    return rows


def _laplace_rows() -> np.ndarray:
    """(N_SCALES * N_FRACTIONS, N_OFFSETS) integer masses of the binned Laplace distribution.

    Bin d spans [d - 1/2 - f, d + 1/2 - f] around the mean. From d = d0 on its upper edge lies
    at u = a + j (a in [0, 1)) right of the mean, where the CDF is 1 - exp(-u/b)/2; the upper
    edges left of the mean lie at distance (1 - a) + j, where the CDF is exp(-dist/b)/2.
    """
    right0, left0, ratio, d0 = [], [], [], []
    for b in _scales():
        r = _exp_fixed(-1 / b)
        for peak, f in _mean_fractions():
            a = peak + Decimal("0.5") - f
            right0.append(_exp_fixed(-a / b) >> 1)
            left0.append(_exp_fixed(-(1 - a) / b) >> 1)
            ratio.append(r)
            d0.append(peak)
    ratios = np.array(ratio, np.int64)
    right = _ONE - _geometric(np.array(right0), ratios, N_OFFSETS + 1)
    left = _geometric(np.array(left0), ratios, N_OFFSETS + 1)
    # CDF at the upper edges of bins OFFSET_MIN - 1 .. OFFSET_MAX, then the masses between.
    cdf = _assemble(left, right, np.array(d0), N_OFFSETS + 1)
    return np.diff(cdf, axis=1)


def _gaussian_rows() -> np.ndarray:
    """(N_SCALES * N_FRACTIONS, N_OFFSETS) integer masses of the integer-sampled Gaussian.

    With t = d - f, q(d + 1) / q(d) = exp(-(2t + 1) / 2s^2) and q(d - 1) / q(d) =
    exp(-(1 - 2t) / 2s^2); walking away from the peak d0 both ratios shrink by exp(-1/s^2)
    per step, so they stay below one and the products never overflow.
    """
    peak_mass, right0, left0, decay, d0 = [], [], [], [], []
    for s in _scales():
        two_var = 2 * s * s
        c = _exp_fixed(-2 / two_var)
        for peak, f in _mean_fractions():
            t0 = peak - f
            peak_mass.append(_exp_fixed(-(t0 * t0) / two_var))
            right0.append(_exp_fixed(-(2 * t0 + 1) / two_var))
            left0.append(_exp_fixed(-(1 - 2 * t0) / two_var))
            decay.append(c)
            d0.append(peak)
    decays = np.array(decay, np.int64)
    peaks = np.array(peak_mass, np.int64)
    right = _products(peaks, _geometric(np.array(right0), decays, N_OFFSETS))
    left = _products(peaks, _geometric(np.array(left0), decays, N_OFFSETS))[:, 1:]
    return _assemble(left, right, np.array(d0), N_OFFSETS)


_BUILDERS = {"laplace": _laplace_rows, "gaussian": _gaussian_rows}


@lru_cache(maxsize=2)
def mass_table(family: str) -> np.ndarray:
    """(scale indices * N_FRACTIONS * N_OFFSETS,) float64 integer masses, read-only.

    Row ``scale_index * N_FRACTIONS + fraction`` holds offsets OFFSET_MIN..OFFSET_MAX.
    """
    table = _BUILDERS[family]().astype(np.float64).ravel()
    table.setflags(write=False)
    return table


def table_sha256(family: str) -> str:
    """Fingerprint of a family's table (pinned by the tests, so a change cannot slip by)."""
    return hashlib.sha256(mass_table(family).astype("<i8").tobytes()).hexdigest()


def probabilities(family: str, mean16: np.ndarray, scale_index: np.ndarray) -> np.ndarray:
    """(n, 256) unnormalized probabilities of the symbols 0..255 for each voxel (float64
    integers); constriction's categorical model normalizes them over the 256 symbols."""
    mean16 = np.asarray(mean16, dtype=np.int64)
    row = np.asarray(scale_index, dtype=np.int64) * N_FRACTIONS + (mean16 & (N_FRACTIONS - 1))
    start = row * N_OFFSETS + (-OFFSET_MIN - (mean16 >> MEAN_FRACTION_BITS))
    return mass_table(family)[start[:, None] + np.arange(256, dtype=np.int64)]


#: Window widths of format v3, narrowest first: a voxel is coded inside a window of offsets
#: [-W/2, W/2) around floor(mean), plus one escape entry for everything outside it.
WINDOW_WIDTHS = (16, 32, 64, 128, 256)
#: Relative cost of decoding an escaped voxel: it is coded again under a full 256-symbol row.
ESCAPE_ROW_COST = 1024
#: v3 window tables hold masses whose row sums stay below 2**24 (exact in float32).
WINDOW_TOTAL_BITS = 24


@lru_cache(maxsize=2)
def _masses24(family: str) -> np.ndarray:
    """(rows, N_OFFSETS) int64 masses, each row shifted right until its sum is below 2**24.

    Cached (read-only): the window classes and every width's table are cut from it, and
    building it (about 0.15 s) once per width was most of a fresh process's first decode.
    """
    masses = _BUILDERS[family]()
    total = masses.sum(axis=1)
    drop = np.zeros(total.shape, np.int64)
    while True:
        over = (total >> drop) >= (1 << WINDOW_TOTAL_BITS)
        if not over.any():
            break
        drop = drop + over
    shifted = masses >> drop[:, None]
    while np.any(shifted.sum(axis=1) >= (1 << WINDOW_TOTAL_BITS)):  # pragma: no cover - floor sums
        big = shifted.sum(axis=1) >= (1 << WINDOW_TOTAL_BITS)
        shifted[big] >>= 1
    shifted.setflags(write=False)
    return shifted


@lru_cache(maxsize=2)
def window_classes(family: str) -> np.ndarray:
    """(N_SCALES,) index into WINDOW_WIDTHS of the window each scale index is coded in.

    Escapes cost no bits (the escape entry carries exactly the mass outside the window, and
    an escaped symbol is then coded under the outside masses alone), only time: the coder's
    work grows with the row width, so each scale takes the width that minimizes the expected
    row entries per voxel, (W + 1) + P(escape) * ESCAPE_ROW_COST, at its worst mean fraction.
    Computed in integers from the exact tables: identical on every machine.
    """
    masses = _masses24(family)
    total = masses.sum(axis=1)
    costs = []
    for width in WINDOW_WIDTHS:
        half = width // 2
        outside = total - masses[:, -OFFSET_MIN - half : -OFFSET_MIN + half].sum(axis=1)
        per_row = (width + 1) * total + ESCAPE_ROW_COST * outside  # cost * total, exact
        costs.append(per_row * ((1 << 26) // np.maximum(total, 1)))  # common scale per row
    worst = np.stack(costs).reshape(len(WINDOW_WIDTHS), -1, N_FRACTIONS).max(axis=2)
    per_scale = np.argmin(worst, axis=0).astype(np.int64)
    per_scale.setflags(write=False)
    return per_scale


@lru_cache(maxsize=10)
def window_table(family: str, width: int) -> np.ndarray:
    """(N_SCALES * N_FRACTIONS, width + 1) float32: masses of offsets [-width/2, width/2) from
    floor(mean), then the escape entry (the mass outside, at least 1). Exact integers."""
    masses = _masses24(family)
    half = width // 2
    inside = masses[:, -OFFSET_MIN - half : -OFFSET_MIN + half]
    escape = np.maximum(masses.sum(axis=1) - inside.sum(axis=1), 1)
    table = np.concatenate([inside, escape[:, None]], axis=1).astype(np.float32)
    table.setflags(write=False)
    return table


def window_sha256(family: str) -> str:
    """Fingerprint of a family's v3 window classes and tables (pinned by the tests)."""
    digest = hashlib.sha256(window_classes(family).astype("<i8").tobytes())
    for width in WINDOW_WIDTHS:
        digest.update(window_table(family, width).astype("<f4").tobytes())
    return digest.hexdigest()


def warm(families: tuple[str, ...] = tuple(_BUILDERS)) -> None:
    """Build every table a decode or encode of these families looks up, ahead of the first block.

    For long-lived worker processes (Dask restore workers, verifier pools), so that their first
    block does not pay for the tables.
    """
    for family in families:
        mass_table(family)
        window_classes(family)
        for width in WINDOW_WIDTHS:
            window_table(family, width)


__all__ = [
    "ESCAPE_ROW_COST",
    "FRACTION_BITS",
    "N_FRACTIONS",
    "N_OFFSETS",
    "OFFSET_MAX",
    "OFFSET_MIN",
    "WINDOW_WIDTHS",
    "mass_table",
    "probabilities",
    "table_sha256",
    "warm",
    "window_classes",
    "window_sha256",
    "window_table",
]
