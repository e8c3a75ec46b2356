"""The per-voxel distribution family, its fixed parameter grids, and its training loss.

The network outputs a mean on a 1/16 grey-level grid and a scale index into :data:`SCALES`;
those two integers are all the entropy coder ever sees. The scale table is built with integer
arithmetic only, so every machine holds bit-identical float64 values.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is for training only: decoding never imports it
    import torch

FAMILIES = ("gaussian", "laplace")
#: Means are coded on a grid of 1 / 2**MEAN_FRACTION_BITS grey levels.
MEAN_FRACTION_BITS = 4
#: Number of entries in the scale table.
N_SCALES = 128
#: Scale table: SCALES[i] = 0.25 * 2**(i / SCALES_PER_OCTAVE), rounded to 20 fractional bits.
SCALES_PER_OCTAVE = 12
_SCALE_FRACTION_BITS = 20
_SCALE0 = 1 << (_SCALE_FRACTION_BITS - 2)  # 0.25
_RATIO_NUMERATOR = 1_110_928  # round(2**20 * 2**(1/12))
MIN_PROBABILITY = 2.0**-24
SYMBOL_MIN = 0
SYMBOL_MAX = 255


@lru_cache(maxsize=1)
def scale_numerators() -> tuple[int, ...]:
    """Each scale index's scale times 2**20, from an integer recurrence (no libm involved)."""
    numerators = [_SCALE0]
    for _ in range(N_SCALES - 1):
        numerators.append((numerators[-1] * _RATIO_NUMERATOR + (1 << 19)) >> 20)
    return tuple(numerators)


@lru_cache(maxsize=1)
def scale_table() -> np.ndarray:
    """The float64 scale of each scale index (exact: integers over 2**20)."""
    table = np.array(scale_numerators(), dtype=np.float64) / float(1 << _SCALE_FRACTION_BITS)
    table.setflags(write=False)
    return table


def continuous_scale(index: torch.Tensor) -> torch.Tensor:
    """The scale for a real-valued index, as the training loss uses it."""
    import torch

    clamped = index.clamp(0.0, float(N_SCALES - 1))
    return 0.25 * torch.pow(2.0, clamped / SCALES_PER_OCTAVE)


def _cdf(family: str, x: torch.Tensor) -> torch.Tensor:
    import torch

    if family == "gaussian":
        return torch.special.ndtr(x)
    # Laplace with unit scale, written so that both tails keep precision.
    # exp(-|x|) never overflows, so neither branch of the where() poisons the gradient.
    tail = 0.5 * torch.exp(-torch.abs(x))
    return torch.where(x < 0, tail, 1.0 - tail)


def negative_log2_likelihood(
    family: str, values: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Bits needed for ``values`` (grey levels) under the quantized, clipped distribution.

    The density is clipped to [-0.5, 255.5], renormalized and integrated over unit bins;
    probabilities are floored at 2**-24 as the coder floors them. This is exactly the coded
    Laplace family (codec.tables); the coded Gaussian family samples the density at the
    integers instead, which differs from this integral by < 0.01 bit for scales >= 1 and only
    matters for near-constant regions (training there aims at a slightly wider scale).
    """
    import torch

    inv = 1.0 / scale
    upper = _cdf(family, (values + 0.5 - mean) * inv)
    lower = _cdf(family, (values - 0.5 - mean) * inv)
    total = _cdf(family, (SYMBOL_MAX + 0.5 - mean) * inv) - _cdf(family, (SYMBOL_MIN - 0.5 - mean) * inv)
    prob = (upper - lower) / total.clamp_min(1e-12)
    return -torch.log2(prob.clamp_min(MIN_PROBABILITY))
