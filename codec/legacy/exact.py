"""Exact integer inference in float32: the arithmetic that encoder and decoder must agree on.

Every layer computes ``y = clamp(floor((W x + b + half) * 2**-shift), lo, hi)`` on integers
``x``, with integer weights ``W``, integer ``b`` and ``half = 2**(shift - 1)`` (round half up).
The products and sums run in float32, which represents every integer below 2**24 exactly. If

    sum_i |W[o, i]| * max|x_i|  +  |b[o] + half[o]|  <  2**24      (ACCUMULATOR_LIMIT)

for every output ``o``, then every partial sum of every summation order is an integer below
2**24, so float32 matrix products and direct convolutions give the same integers whatever
their blocking, thread count, batch size, BLAS or device. The power-of-two rescale and floor
are exact too. :func:`accumulator_bounds` computes the left-hand side from the weights and the
inputs' ranges; the freezer picks weight exponents that keep it below the limit, and a model
read from a container that breaks it is refused before it runs.

What may break exactness is an algorithm that does not sum products: Winograd or FFT
convolutions, TensorFloat-32 matrix units. :func:`exact_mode` turns those off (NNPACK and cuDNN
off, oneDNN's direct convolution, TF32 off) around every call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Every partial sum stays strictly below this (float32 holds integers up to 2**24 exactly).
ACCUMULATOR_LIMIT = 1 << 24
#: Largest |shift| a layer may use.
SHIFT_LIMIT = 40


class BoundError(ValueError):
    """A layer whose partial sums could reach 2**24: float32 would no longer be exact."""


@dataclass(frozen=True)
class ExactLayer:
    """One integer layer. weight: (out, in) or (out, in, 3, 3) integers; bias, shift, lo, hi: (out,)."""

    weight: np.ndarray
    bias: np.ndarray
    shift: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def outputs(self) -> int:
        return int(self.weight.shape[0])

    def offset(self) -> np.ndarray:
        """b + half as int64: the constant added before the rescale."""
        s = self.shift.astype(np.int64)
        half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
        return self.bias.astype(np.int64) + half


def accumulator_bounds(layer: ExactLayer, input_max: np.ndarray) -> np.ndarray:
    """Per output, the largest magnitude any partial sum can reach (int64, exact).

    ``input_max`` holds max|x| per input channel (for convolutions, per input channel of the
    3x3 window).
    """
    w = np.abs(layer.weight.astype(np.int64)).reshape(layer.outputs, input_max.size, -1).sum(axis=2)
    return w @ input_max.astype(np.int64) + np.abs(layer.offset())


def check_bounds(layer: ExactLayer, input_max: np.ndarray, name: str) -> None:
    """Raise :class:`BoundError` unless every partial sum of ``layer`` stays below 2**24."""
    if np.any(np.abs(layer.shift.astype(np.int64)) > SHIFT_LIMIT):
        raise BoundError(f"{name}: shift outside +-{SHIFT_LIMIT}")
    if np.any(layer.lo > layer.hi):
        raise BoundError(f"{name}: empty output range")
    worst = accumulator_bounds(layer, input_max)
    if np.any(worst >= ACCUMULATOR_LIMIT):
        o = int(np.argmax(worst))
        raise BoundError(f"{name}: output {o} can accumulate {int(worst[o])} >= 2**24; float32 would not be exact")


@contextmanager
def exact_mode() -> Iterator[None]:
    """Only algorithms that sum products: no NNPACK/Winograd, no cuDNN, no TF32."""
    previous_matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.nnpack.flags(enabled=False), torch.backends.cudnn.flags(enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_matmul


@dataclass
class TorchLayer:
    """An :class:`ExactLayer` as float32 tensors on a device, stacked over B models."""

    weight: torch.Tensor  # (B, out, in) or (B * out, in, 3, 3)
    offset: torch.Tensor  # (B, out, 1) or (B * out,)
    scale: torch.Tensor  # (B, out, 1): 2**-shift
    lo: torch.Tensor  # (B, out, 1)
    hi: torch.Tensor  # (B, out, 1)
    uniform_range: tuple[float, float] | None = None

    @classmethod
    def stack(cls, layers: list[ExactLayer], device: torch.device) -> TorchLayer:
        """Stack the same layer of B models (identical shapes) for one batched call."""

        def col(values: list[np.ndarray]) -> torch.Tensor:
            return torch.as_tensor(np.stack(values).astype(np.float32), device=device).unsqueeze(-1)

        weight = torch.as_tensor(np.stack([layer.weight for layer in layers]).astype(np.float32), device=device)
        offsets = [layer.offset() for layer in layers]
        if weight.dim() == 5:  # convolution: grouped over the models
            weight = weight.reshape(-1, *weight.shape[2:])
            offset = torch.as_tensor(np.concatenate(offsets).astype(np.float32), device=device)
        else:
            offset = col(offsets)
        scale = col([np.ldexp(1.0, -layer.shift.astype(np.int64)) for layer in layers])
        lo = col([layer.lo for layer in layers])
        hi = col([layer.hi for layer in layers])
        lows = {int(v) for layer in layers for v in layer.lo}
        highs = {int(v) for layer in layers for v in layer.hi}
        uniform = (float(lows.pop()), float(highs.pop())) if len(lows) == len(highs) == 1 else None
        return cls(weight, offset, scale, lo, hi, uniform)

    def finish(self, acc: torch.Tensor) -> torch.Tensor:
        """Rescale, floor and clamp (..., B, out, n) accumulators, in place."""
        acc.mul_(self.scale).floor_()
        if self.uniform_range is not None:  # ReLU layers: one range for every channel
            return acc.clamp_(*self.uniform_range)
        return torch.maximum(torch.minimum(acc, self.hi, out=acc), self.lo, out=acc)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, n) integer inputs -> (B, out, n) integer outputs."""
        return self.finish(torch.baddbmm(self.offset, self.weight, x))

    def conv3x3(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, in, H, W) integer inputs -> (B, N, out, H, W), zero padding.

        The B models' convolutions run as one grouped convolution over N images each.
        """
        b, n, c, h, w = x.shape
        images = x.permute(1, 0, 2, 3, 4).reshape(n, b * c, h, w)
        acc = F.conv2d(images, self.weight, self.offset, padding=1, groups=b)
        out = self.finish(acc.reshape(n, b, -1, h * w))
        return out.reshape(n, b, -1, h, w).permute(1, 0, 2, 3, 4)
