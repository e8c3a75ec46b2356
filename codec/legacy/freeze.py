"""Freeze a trained :class:`~codec.legacy.network.LatticeModel` into a :class:`~codec.legacy.frozen.FrozenModel`.

Post-training quantization: ReLU outputs get a per-channel power-of-two grid from calibration
(their largest value on a few slices maps near the top of the 10-bit range); every layer's
weights get the largest per-output power-of-two scale that (a) fits the storage type, (b) keeps
the bias in range and (c) keeps every partial sum below 2**24 (:mod:`codec.legacy.exact`). (c) is what
makes float32 inference exact; where it binds, the layer loses low weight bits, never exactness.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from codec.distributions import MEAN_FRACTION_BITS
from codec.legacy import exact, lattice
from codec.legacy.frozen import ACTIVATION_MAX, FrozenModel, LayerSpec, layer_specs
from codec.legacy.network import INPUT_EXP, LatticeModel

_EXP_LIMIT = 30


def _calibrate(model: LatticeModel, stack: torch.Tensor) -> list[np.ndarray]:
    """Per-channel maxima of every ReLU output, in layer order (trunk, then head by head)."""
    maxima: list[np.ndarray] = []

    def recorder(channel_dim: int) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def record(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            dims = [d for d in range(out.dim()) if d != channel_dim % out.dim()]
            if out.numel() == 0:  # a group with no voxels in this (tiny) block
                maxima.append(np.zeros(out.shape[channel_dim], np.float64))
            else:
                maxima.append(out.detach().amax(dim=dims).cpu().double().numpy())

        return record

    hooks = [m.register_forward_hook(recorder(1)) for m in model.trunk if isinstance(m, nn.ReLU)]
    for head in model.heads:
        hooks += [m.register_forward_hook(recorder(-1)) for m in head.children() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(stack)
    finally:
        for h in hooks:
            h.remove()
    return maxima


def _exponent_for(max_abs: np.ndarray, limit: float) -> np.ndarray:
    """Largest e with max_abs * 2**e <= limit (dead channels take the others' largest e)."""
    alive = max_abs > 0
    e = np.floor(np.log2(limit / np.where(alive, max_abs, 1.0)))
    e = np.where(alive, e, e[alive].max() if alive.any() else 0)
    return np.clip(e, -_EXP_LIMIT, _EXP_LIMIT).astype(np.int64)


def quantize_layer(
    weight: np.ndarray, bias: np.ndarray, in_exp: np.ndarray, out_exp: np.ndarray, spec: LayerSpec
) -> exact.ExactLayer:
    """One layer whose inputs are integers x with real value x * 2**-in_exp[i].

    Outputs land on the grid real * 2**out_exp. The weight exponent of each output starts at
    the largest the storage type and the bias allow and is lowered until the layer's
    partial-sum bound holds.
    """
    in_scale = np.power(2.0, -in_exp.astype(np.float64))
    folded = weight * in_scale.reshape((1, -1) + (1,) * (weight.ndim - 2))
    rows = np.abs(folded.reshape(folded.shape[0], -1))
    exponent = np.minimum(
        _exponent_for(rows.max(axis=1), spec.weight_limit), _exponent_for(np.abs(bias), float(1 << 23))
    )
    for _ in range(2 * _EXP_LIMIT):
        scale = np.power(2.0, exponent.astype(np.float64)).reshape((-1,) + (1,) * (weight.ndim - 1))
        w_int = np.clip(np.rint(folded * scale), -spec.weight_limit, spec.weight_limit).astype(np.int64)
        b_int = np.rint(bias * np.power(2.0, exponent)).astype(np.int64)
        shift = np.clip(exponent - out_exp, -exact.SHIFT_LIMIT, exact.SHIFT_LIMIT).astype(np.int64)
        layer = exact.ExactLayer(w_int, b_int, shift, spec.lo, spec.hi)
        over = exact.accumulator_bounds(layer, spec.input_max) >= exact.ACCUMULATOR_LIMIT
        if not over.any():
            return layer
        exponent = np.where(over, exponent - 1, exponent)
    raise exact.BoundError("could not scale a layer below the float32 bound")


def _params(layer: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    assert isinstance(layer, nn.Conv2d | nn.Linear) and layer.bias is not None
    return layer.weight.detach().cpu().double().numpy(), layer.bias.detach().cpu().double().numpy().copy()


def freeze(model: LatticeModel, calibration_stack: torch.Tensor) -> FrozenModel:
    """The exact integer model closest to ``model`` (see the module docstring)."""
    arch = model.arch
    specs = iter(layer_specs(arch))
    act_exp = [_exponent_for(m * 1.25, float(ACTIVATION_MAX)) for m in _calibrate(model, calibration_stack)]
    act_iter = iter(act_exp)
    layers: list[exact.ExactLayer] = []
    in_exp = np.full(arch.k, INPUT_EXP, np.int64)
    for conv in (m for m in model.trunk if isinstance(m, nn.Conv2d)):
        out_exp = next(act_iter)
        layers.append(quantize_layer(*_params(conv), in_exp, out_exp, next(specs)))
        in_exp = out_exp
    trunk_exp = in_exp
    mean_exp = np.array([INPUT_EXP + MEAN_FRACTION_BITS, 0], np.int64)
    for g, (head, output) in enumerate(zip(model.heads, model.outputs, strict=True)):
        head_in = np.concatenate([trunk_exp, np.full(lattice.head_input_width(g, 0), INPUT_EXP, np.int64)])
        e_in = head_in
        for lin in (m for m in head.children() if isinstance(m, nn.Linear)):
            out_exp = next(act_iter)
            layers.append(quantize_layer(*_params(lin), e_in, out_exp, next(specs)))
            e_in = out_exp
        # Output 0: the centred mean / 2**INPUT_EXP, coded as grey * 2**MEAN_FRACTION_BITS
        # (the centring folds into the bias); output 1: the scale index itself.
        w, b = _params(output)
        b[0] += lattice.CENTER / 2**INPUT_EXP
        layers.append(quantize_layer(w, b, np.concatenate([e_in, head_in]), mean_exp, next(specs)))
    return FrozenModel(arch, layers)
