"""Turn a trained float model into the int32 array the engine runs (MODL of a v4 container).

Layout (all int32, docs/format.md): hidden, n_prev, n_cur, shift1, shift2, shift_mean,
shift_scale, n_scales; the context offsets (n_prev x (dz, dy, dx), n_cur x (dy, dx)); W1 for
previous-slice inputs (n_prev x hidden) and in-slice inputs (n_cur x hidden), b1; W2 (hidden in
x hidden out), b2; W3 (2 x hidden: mean row, scale row), b3 (2); the skip's weights (n_prev,
n_cur) and bias. W1, W2 and the skip's weights are within int16 (the engine multiplies them
as int16 pairs); hidden is a multiple of 8.

Arithmetic (integers only; :func:`check_bounds` keeps every partial sum below 2**30):
  act(a, s) = min(255, (max(a, 0) + 2**(s-1)) >> s)
  h1 = act(b1 + W1 . c, shift1),  h2 = act(b2 + W2 . h1, shift2)
  m = bskip + Wskip . c + b3[0] + W3[0] . h2,  mean4 = 512 + floor((m + 2**(shift_mean-3)) / 2**(shift_mean-2))
  scale index = floor((b3[1] + W3[1] . h2 + 2**(shift_scale-1)) / 2**shift_scale)
mean4 (the mean in quarter grey levels) is clamped to 0..1023, the scale index to
0..n_scales - 1. Activation scales come from a calibration sample: the 99.9th percentile of each
layer maps to at most 255.

Field ranges (docs/format.md): hidden 8..64 in steps of 8, inputs 0..64 per group, shift1 and
shift2 1..24, shift_mean 5..24, shift_scale 1..24, n_scales = N_SCALES. shift_scale 24 is special:
every voxel takes scale index 0. v4 writers before 2026-12-07 chose 24 for a model whose scale row
is near zero, and the engine of that time computed index 0 for it; v4 keeps that meaning so that
their containers decode, and writers now choose at most 23 (``MAX_WRITTEN_SHIFT_SCALE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from codec.distributions import N_SCALES, SCALES_PER_OCTAVE
from codec.v4.context import Context

if TYPE_CHECKING:  # freezing a trained model needs torch; reading a MODL array (unpack, check_bounds) does not
    import torch

    from codec.v4.model import RasterModel

HEADER = 8
#: The shift_scale whose scale index is 0 for every voxel (see the module docstring).
SHIFT_SCALE_CONSTANT = 24
#: The largest shift_scale ``freeze`` writes: the scale row keeps its meaning.
MAX_WRITTEN_SHIFT_SCALE = 23
#: Largest |partial sum| any int32 accumulator may reach (margin below 2**31).
SUM_LIMIT = 1 << 30
_WEIGHT_LIMIT = 1 << 14
_INT16_MAX = 32767
_INPUT_MAX = 128
_ACTIVATION_MAX = 255


class BoundError(ValueError):
    """A model array whose int32 sums could overflow, or that is malformed."""


def _exponent_for(values: np.ndarray, limit: int) -> int:
    biggest = float(np.max(np.abs(values))) if values.size else 0.0
    return 30 if biggest == 0.0 else min(30, math.floor(math.log2(limit / biggest)))


def _activation_exponent(activations: torch.Tensor) -> int:
    """log2 of the scale that maps the 99.9th percentile of ``activations`` to at most 255."""
    import torch

    top = float(torch.quantile(activations.flatten()[:1_000_000], 0.999)) if activations.numel() else 0.0
    return 8 if top <= 0 else math.floor(math.log2(_ACTIVATION_MAX / top))


def _hidden_layer(
    weight: np.ndarray, bias: np.ndarray, input_max: int, activation_exponent: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer weights, bias and shift of one hidden layer (weight: (inputs, outputs), in units of
    the integer inputs). The weights are as large as int16-sized integers and the int32 bound
    allow; the shift then maps the sums to activations 2**activation_exponent times the float ones."""
    worst_sum = np.abs(weight).sum(axis=0).max() * input_max + np.abs(bias).max()
    exponent = min(_exponent_for(weight, _WEIGHT_LIMIT), _exponent_for(np.array([worst_sum]), SUM_LIMIT // 2))
    shift = max(1, exponent - activation_exponent)
    exponent = shift + activation_exponent
    return np.round(weight * 2.0**exponent), np.round(bias * 2.0**exponent), shift


def freeze(model: RasterModel, context: Context, calibration: np.ndarray) -> np.ndarray:
    """The model as a v4 MODL int32 array; ``calibration`` (n, inputs) int16 sets activation scales."""
    import torch

    from codec.v4.model import INPUT_DIVISOR, SCALE_OFFSET

    n_prev = len(context.previous)
    hidden = model.l1.out_features
    with torch.no_grad():
        h1, h2 = model.hidden_layers(torch.from_numpy(calibration.astype(np.float32)))
        w1 = model.l1.weight.double().numpy().T / INPUT_DIVISOR  # (inputs, hidden)
        b1 = model.l1.bias.double().numpy()
        w2 = model.l2.weight.double().numpy().T  # (hidden in, hidden out)
        b2 = model.l2.bias.double().numpy()
        w3 = model.out.weight.double().numpy() * np.array([[1.0], [SCALES_PER_OCTAVE]])  # (2, hidden)
        b3 = model.out.bias.double().numpy() * np.array([1.0, SCALES_PER_OCTAVE]) + np.array([0.0, SCALE_OFFSET])
        ws = model.skip.weight.double().numpy()[0]
        bs = float(model.skip.bias.double().numpy()[0])
    a1 = _activation_exponent(h1)
    a2 = _activation_exponent(h2)
    w1q, b1q, shift1 = _hidden_layer(w1, b1, _INPUT_MAX, a1)
    w2q, b2q, shift2 = _hidden_layer(w2 / 2.0**a1, b2, _ACTIVATION_MAX, a2)
    w3s = w3 / 2.0**a2
    # Mean: the skip (int16 weights) and the mean row share 2**shift_mean.
    mean_sum = np.abs(ws).sum() * _INPUT_MAX + abs(bs) + np.abs(w3s[0]).sum() * _ACTIVATION_MAX + abs(b3[0])
    shift_mean = max(5, min(24, _exponent_for(ws, _WEIGHT_LIMIT), _exponent_for(np.array([mean_sum]), SUM_LIMIT // 2)))
    scale_sum = np.abs(w3s[1]).sum() * _ACTIVATION_MAX + abs(b3[1])
    shift_scale = max(1, min(MAX_WRITTEN_SHIFT_SCALE, _exponent_for(np.array([scale_sum]), SUM_LIMIT // 2)))
    w3q = np.stack([np.round(w3s[0] * 2.0**shift_mean), np.round(w3s[1] * 2.0**shift_scale)])
    b3q = np.array([round(b3[0] * 2.0**shift_mean), round(b3[1] * 2.0**shift_scale)], np.float64)
    wsq, bsq = np.round(ws * 2.0**shift_mean), round(bs * 2.0**shift_mean)
    header = [hidden, n_prev, len(context.current), shift1, shift2, shift_mean, shift_scale, N_SCALES]
    parts = [
        np.array(header, np.float64),
        np.array(context.previous, np.float64).ravel(),
        np.array(context.current, np.float64).ravel(),
        w1q[:n_prev].ravel(),
        w1q[n_prev:].ravel(),
        b1q,
        w2q.ravel(),
        b2q,
        w3q.ravel(),
        b3q,
        wsq[:n_prev],
        wsq[n_prev:],
        np.array([bsq], np.float64),
    ]
    array = np.concatenate(parts).astype(np.int32)
    check_bounds(array)
    return array


@dataclass(frozen=True)
class ModelArray:
    """A MODL array split into its parts (int64 numpy arrays, shaped)."""

    hidden: int
    shift1: int
    shift2: int
    shift_mean: int
    shift_scale: int
    n_scales: int
    previous: np.ndarray  # (n_prev, 3)
    current: np.ndarray  # (n_cur, 2)
    w1: np.ndarray  # (n_prev + n_cur, hidden): previous-slice inputs first
    b1: np.ndarray
    w2: np.ndarray  # (hidden in, hidden out)
    b2: np.ndarray
    w3: np.ndarray  # (2, hidden): mean row, scale row
    b3: np.ndarray  # (2,)
    skip: np.ndarray  # (n_prev + n_cur,)
    skip_bias: int


def unpack(array: np.ndarray) -> ModelArray:
    """Split a MODL array into its parts (BoundError if its size does not match its header)."""
    if array.size < HEADER:
        raise BoundError("model array shorter than its header")
    hidden, n_prev, n_cur, shift1, shift2, shift_mean, shift_scale, n_scales = (int(v) for v in array[:HEADER])
    if not (8 <= hidden <= 64 and hidden % 8 == 0 and 0 <= n_prev <= 64 and 0 <= n_cur <= 64):
        raise BoundError(f"model header out of range: hidden {hidden}, inputs {n_prev}+{n_cur}")
    if not (1 <= shift1 <= 24 and 1 <= shift2 <= 24 and 5 <= shift_mean <= 24 and 1 <= shift_scale <= 24):
        raise BoundError(
            f"model shifts out of range: {shift1}, {shift2}, mean {shift_mean}, scale {shift_scale} "
            "(format: 1-24, 1-24, 5-24, 1-24)"
        )
    if n_scales != N_SCALES:
        raise BoundError(f"model claims {n_scales} scales, the format has {N_SCALES}")
    inputs = n_prev + n_cur
    sizes = (3 * n_prev, 2 * n_cur, inputs * hidden, hidden, hidden * hidden, hidden, 2 * hidden, 2, inputs, 1)
    if array.size != HEADER + sum(sizes):
        raise BoundError(f"model array holds {array.size} integers, its header implies {HEADER + sum(sizes)}")
    parts = np.split(array[HEADER:].astype(np.int64), np.cumsum(sizes)[:-1])
    previous, current, w1, b1, w2, b2, w3, b3, skip, skip_bias = parts
    return ModelArray(
        hidden, shift1, shift2, shift_mean, shift_scale, n_scales,
        previous.reshape(n_prev, 3), current.reshape(n_cur, 2), w1.reshape(inputs, hidden), b1,
        w2.reshape(hidden, hidden), b2, w3.reshape(2, hidden), b3, skip, int(skip_bias[0]),
    )  # fmt: skip


def check_bounds(array: np.ndarray) -> None:
    """Refuse a model whose int32 partial sums could pass SUM_LIMIT for any input, or whose
    int16 weights leave int16 (BoundError)."""
    m = unpack(array)
    if max(int(np.abs(part).max(initial=0)) for part in (m.w1, m.w2, m.skip)) > _INT16_MAX:
        raise BoundError("model weights of layers 1, 2 or the skip leave the int16 range")
    layer1 = np.abs(m.w1).sum(axis=0) * _INPUT_MAX + np.abs(m.b1)
    layer2 = np.abs(m.w2).sum(axis=0) * _ACTIVATION_MAX + np.abs(m.b2)
    skip = int(np.abs(m.skip).sum()) * _INPUT_MAX + abs(m.skip_bias)
    mean = skip + int(np.abs(m.w3[0]).sum()) * _ACTIVATION_MAX + abs(int(m.b3[0]))
    scale = int(np.abs(m.w3[1]).sum()) * _ACTIVATION_MAX + abs(int(m.b3[1]))
    worst = max(int(layer1.max()), int(layer2.max()), mean, scale)
    if worst >= SUM_LIMIT:
        raise BoundError(f"model sums could reach {worst}, over the int32 limit {SUM_LIMIT}")
