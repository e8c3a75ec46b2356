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
  m = bskip + Wskip . c + b3[0] + W3[0] . h2,  mean16 = 2048 + floor((m + 2**(shift_mean-5)) / 2**(shift_mean-4))
  scale index = floor((b3[1] + W3[1] . h2 + 2**(shift_scale-1)) / 2**shift_scale)
mean16 is clamped to 0..4095, the scale index to 0..n_scales - 1. Activation scales come from a
calibration sample: the 99.9th percentile of each layer maps to at most 255.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from codec.distributions import N_SCALES
from codec.v4.context import Context
from codec.v4.model import INPUT_DIVISOR, SCALE_OFFSET, RasterModel

HEADER = 8
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
    top = float(torch.quantile(activations.flatten()[:1_000_000], 0.999)) if activations.numel() else 0.0
    return 8 if top <= 0 else math.floor(math.log2(_ACTIVATION_MAX / top))


def freeze(model: RasterModel, context: Context, calibration: np.ndarray) -> np.ndarray:
    """The model as a v4 MODL int32 array; ``calibration`` (n, inputs) int16 sets activation scales."""
    n_prev = len(context.previous)
    hidden = model.l1.out_features
    with torch.no_grad():
        h1, h2 = model.hidden_layers(torch.from_numpy(calibration.astype(np.float32)))
        w1 = model.l1.weight.double().numpy().T / INPUT_DIVISOR  # (inputs, hidden)
        b1 = model.l1.bias.double().numpy()
        w2 = model.l2.weight.double().numpy().T  # (hidden in, hidden out)
        b2 = model.l2.bias.double().numpy()
        w3 = model.out.weight.double().numpy()  # (2, hidden)
        b3 = model.out.bias.double().numpy() + np.array([0.0, SCALE_OFFSET])
        ws = model.skip.weight.double().numpy()[0]
        bs = float(model.skip.bias.double().numpy()[0])
    a1 = _activation_exponent(h1)
    a2 = _activation_exponent(h2)
    # Layer 1: weights as large as int16-sized integers and the int32 bound allow.
    e1 = min(
        _exponent_for(w1, _WEIGHT_LIMIT),
        _exponent_for(np.array([np.abs(w1).sum(axis=0).max() * _INPUT_MAX + np.abs(b1).max()]), SUM_LIMIT // 2),
    )
    shift1 = max(1, e1 - a1)
    e1 = shift1 + a1
    w1q, b1q = np.round(w1 * 2.0**e1), np.round(b1 * 2.0**e1)
    w2s = w2 / 2.0**a1
    e2 = min(
        _exponent_for(w2s, _WEIGHT_LIMIT),
        _exponent_for(np.array([np.abs(w2s).sum(axis=0).max() * _ACTIVATION_MAX + np.abs(b2).max()]), SUM_LIMIT // 2),
    )
    shift2 = max(1, e2 - a2)
    e2 = shift2 + a2
    w2q, b2q = np.round(w2s * 2.0**e2), np.round(b2 * 2.0**e2)
    w3s = w3 / 2.0**a2
    # Mean: the skip (int16 weights) and the mean row share 2**shift_mean.
    mean_sum = np.abs(ws).sum() * _INPUT_MAX + abs(bs) + np.abs(w3s[0]).sum() * _ACTIVATION_MAX + abs(b3[0])
    shift_mean = max(5, min(24, _exponent_for(ws, _WEIGHT_LIMIT), _exponent_for(np.array([mean_sum]), SUM_LIMIT // 2)))
    scale_sum = np.abs(w3s[1]).sum() * _ACTIVATION_MAX + abs(b3[1])
    shift_scale = max(1, min(24, _exponent_for(np.array([scale_sum]), SUM_LIMIT // 2)))
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


def unpack(array: np.ndarray) -> dict[str, np.ndarray | int]:
    """Split a MODL array into named parts (BoundError if its size does not match its header)."""
    if array.size < HEADER:
        raise BoundError("model array shorter than its header")
    hidden, n_prev, n_cur, shift1, shift2, shift_mean, shift_scale, n_scales = (int(v) for v in array[:HEADER])
    if not (8 <= hidden <= 64 and hidden % 8 == 0 and 0 <= n_prev <= 64 and 0 <= n_cur <= 64):
        raise BoundError(f"model header out of range: hidden {hidden}, inputs {n_prev}+{n_cur}")
    if not (1 <= shift1 <= 24 and 1 <= shift2 <= 24 and 5 <= shift_mean <= 30 and 1 <= shift_scale <= 30):
        raise BoundError("model shifts out of range")
    if n_scales != N_SCALES:
        raise BoundError(f"model claims {n_scales} scales, the format has {N_SCALES}")
    sizes = [
        ("previous", 3 * n_prev),
        ("current", 2 * n_cur),
        ("w1p", n_prev * hidden),
        ("w1c", n_cur * hidden),
        ("b1", hidden),
        ("w2", hidden * hidden),
        ("b2", hidden),
        ("w3", 2 * hidden),
        ("b3", 2),
        ("wsp", n_prev),
        ("wsc", n_cur),
        ("bs", 1),
    ]
    if array.size != HEADER + sum(n for _, n in sizes):
        raise BoundError(
            f"model array holds {array.size} integers, its header implies {HEADER + sum(n for _, n in sizes)}"
        )
    parts: dict[str, np.ndarray | int] = {
        "hidden": hidden,
        "shift1": shift1,
        "shift2": shift2,
        "shift_mean": shift_mean,
        "shift_scale": shift_scale,
        "n_scales": n_scales,
    }
    at = HEADER
    for name, n in sizes:
        parts[name] = array[at : at + n].astype(np.int64)
        at += n
    return parts


def check_bounds(array: np.ndarray) -> None:
    """Refuse a model whose int32 partial sums could pass SUM_LIMIT for any input (BoundError)."""
    p = unpack(array)
    hidden = int(p["hidden"])  # type: ignore[arg-type]
    w1 = np.concatenate([np.asarray(p["w1p"]).reshape(-1, hidden), np.asarray(p["w1c"]).reshape(-1, hidden)])
    layer1 = np.abs(w1).sum(axis=0) * _INPUT_MAX + np.abs(np.asarray(p["b1"]))
    layer2 = np.abs(np.asarray(p["w2"]).reshape(hidden, hidden)).sum(axis=0) * _ACTIVATION_MAX + np.abs(
        np.asarray(p["b2"])
    )
    w3 = np.asarray(p["w3"]).reshape(2, hidden)
    skip = (np.abs(np.asarray(p["wsp"])).sum() + np.abs(np.asarray(p["wsc"])).sum()) * _INPUT_MAX + abs(
        int(np.asarray(p["bs"])[0])
    )
    mean = skip + np.abs(w3[0]).sum() * _ACTIVATION_MAX + abs(int(np.asarray(p["b3"])[0]))
    scale = np.abs(w3[1]).sum() * _ACTIVATION_MAX + abs(int(np.asarray(p["b3"])[1]))
    worst = max(int(layer1.max()), int(layer2.max()), int(mean), int(scale))
    narrow = [np.asarray(p[name]) for name in ("w1p", "w1c", "w2", "wsp", "wsc")]
    if any(part.size and int(np.abs(part).max()) > _INT16_MAX for part in narrow):
        raise BoundError("model weights of layers 1, 2 or the skip leave the int16 range")
    if worst >= SUM_LIMIT:
        raise BoundError(f"model sums could reach {worst}, over the int32 limit {SUM_LIMIT}")
