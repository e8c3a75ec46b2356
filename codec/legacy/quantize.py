"""The integer model of format v1/v2 containers, as their decoder runs it (decoding only).

Format v3 models live in :mod:`codec.legacy.frozen`; this module is kept so that v1 and v2 containers,
which facilities already hold, still decode (their golden files are decoded in every test run).

Every layer becomes integer weights (at most ``WEIGHT_BITS`` bits), an integer bias, and a
per-output-channel power-of-two rescale with rounding and clamping done in int64. Matrix
products run in float64 on integer values whose partial sums stay far below 2**53, so every
summation order, thread count, batch size, BLAS, CPU or GPU gives the same integers. The
convolution is an explicit im2col + matmul, so no Winograd or FFT algorithm is ever chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from codec.distributions import MEAN_FRACTION_BITS, N_SCALES
from codec.errors import CorruptDataError
from codec.legacy import context
from codec.legacy.model import Architecture

#: Trunk convolutions and the heads' hidden layers keep 8-bit weights (12 bits measured no better
#: on real blocks, while the weights travel in every container: 12 -> 8 bits saved 1 KB a block
#: and changed the coded voxels by < 0.001 bit each); the output layer, whose rounding errors
#: would add up to a brightness-dependent bias of the predicted mean, keeps 16 bits. Head
#: weights are stored as int16 whatever their width (the decoder reads any width up to 16).
TRUNK_WEIGHT_BITS = 8
HEAD_WEIGHT_BITS = 8
OUTPUT_WEIGHT_BITS = 16
ACTIVATION_BITS = 10
_ACTIVATION_MAX = (1 << ACTIVATION_BITS) - 1
_MEAN_MAX = 255 << MEAN_FRACTION_BITS
_EXP_LIMIT = 60


@dataclass(frozen=True)
class IntegerLayer:
    """y = clamp(round(Σ w·x + b) / 2**shift), lo, hi) per output channel, all integers."""

    weight: np.ndarray  # int8 (hidden) or int16 (output), (out, in) or (out, in, 3, 3)
    bias: np.ndarray  # int32, (out,)
    shift: np.ndarray  # int8, (out,)
    lo: np.ndarray  # int64, (out,)
    hi: np.ndarray  # int64, (out,)


def _layer_shapes(arch: Architecture) -> list[tuple[int, ...]]:
    """Weight shapes of the integer model, in storage order."""
    shapes: list[tuple[int, ...]] = []
    c_in = arch.k
    for _ in range(arch.trunk_layers):
        shapes.append((arch.trunk_channels, c_in, 3, 3))
        c_in = arch.trunk_channels
    for p in range(len(context.PASSES)):
        width = context.head_input_width(p, arch.trunk_channels)
        shapes += [(arch.head_hidden, width), (arch.head_hidden, arch.head_hidden), (2, arch.head_hidden + width)]
    return shapes


def _is_output(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and shape[0] == 2


def _weight_dtype(shape: tuple[int, ...]) -> str:
    """Little-endian storage type of a layer's weights."""
    return "<i1" if len(shape) == 4 else "<i2"


def _weight_limit(shape: tuple[int, ...]) -> int:
    if len(shape) == 4:
        bits = TRUNK_WEIGHT_BITS
    else:
        bits = OUTPUT_WEIGHT_BITS if _is_output(shape) else HEAD_WEIGHT_BITS
    return (1 << (bits - 1)) - 1


def _output_bounds(arch: Architecture) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clamp range of every layer's outputs: ReLU layers to the activation range, heads to grids."""
    bounds: list[tuple[np.ndarray, np.ndarray]] = []
    for shape in _layer_shapes(arch):
        if _is_output(shape):  # output layer: (mean on the 1/16 grid, scale index)
            bounds.append((np.array([0, 0], np.int64), np.array([_MEAN_MAX, N_SCALES - 1], np.int64)))
        else:
            bounds.append((np.zeros(shape[0], np.int64), np.full(shape[0], _ACTIVATION_MAX, np.int64)))
    return bounds


class IntegerModel:
    """The frozen model that both encoder and decoder run; bit-exact everywhere."""

    def __init__(self, arch: Architecture, layers: list[IntegerLayer]) -> None:
        self.arch = arch
        self.layers = layers
        self.trunk = layers[: arch.trunk_layers]
        n = arch.trunk_layers
        self.heads = [layers[n + 3 * p : n + 3 * p + 3] for p in range(len(context.PASSES))]

    # -- inference -------------------------------------------------------------------------
    def trunk_features(self, previous: torch.Tensor) -> torch.Tensor:
        """(N, k, H, W) centred integer slices -> (N, C, H, W) integer features (float64)."""
        x = previous.to(torch.float64)
        n, _, h, w = x.shape
        for layer in self.trunk:
            weight = torch.as_tensor(layer.weight, device=x.device).to(torch.float64)
            cols = F.unfold(x, kernel_size=3, padding=1)  # (N, C_in*9, H*W)
            acc = torch.matmul(weight.reshape(weight.shape[0], -1), cols)  # exact: integers < 2**53
            acc = acc.round().to(torch.int64) + torch.as_tensor(layer.bias, device=x.device).to(torch.int64)[:, None]
            x = _requantize_torch(acc, layer, dim=1).to(torch.float64).reshape(n, -1, h, w)
        return x

    def head(self, inputs: np.ndarray, pass_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(M, F) integer head inputs -> (mean on the 1/16 grid, scale index), both int64 (M,)."""
        hidden1, hidden2, output = self.heads[pass_index]
        x = np.asarray(inputs, dtype=np.float64)
        h = _dense(x, hidden1)
        h = _dense(h, hidden2)
        out = _dense(np.concatenate([h, x], axis=1), output)
        return out[:, 0].astype(np.int64), out[:, 1].astype(np.int64)

    # -- serialization ---------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Weights, biases and shifts in storage order, little-endian."""
        parts = []
        for layer in self.layers:
            parts.append(layer.weight.astype(_weight_dtype(layer.weight.shape)).tobytes())
            parts.append(layer.bias.astype("<i4").tobytes())
            parts.append(layer.shift.astype("<i1").tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, arch: Architecture, data: bytes) -> IntegerModel:
        """Inverse of :meth:`to_bytes`; raises CorruptDataError unless the size is exact."""
        shapes = _layer_shapes(arch)
        expected = sum(int(np.prod(s)) * np.dtype(_weight_dtype(s)).itemsize + 5 * s[0] for s in shapes)
        if len(data) != expected:
            raise CorruptDataError(f"model weights are {len(data)} bytes, the architecture needs {expected}")
        layers, offset = [], 0
        for shape, (lo, hi) in zip(shapes, _output_bounds(arch), strict=False):
            size = int(np.prod(shape))
            dtype = np.dtype(_weight_dtype(shape))
            weight = np.frombuffer(data, dtype, size, offset).reshape(shape).astype(dtype.newbyteorder("="))
            offset += size * dtype.itemsize
            bias = np.frombuffer(data, "<i4", shape[0], offset).astype(np.int32)
            offset += 4 * shape[0]
            shift = np.frombuffer(data, "<i1", shape[0], offset).astype(np.int8)
            offset += shape[0]
            if np.any(np.abs(shift.astype(np.int64)) > _EXP_LIMIT):
                raise CorruptDataError("model shift out of range")
            layers.append(IntegerLayer(weight, bias, shift, lo, hi))
        return cls(arch, layers)


def _round_shift(acc: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round(acc / 2**shift) in int64 (halves round up), per output channel on the last axis."""
    s = shift.astype(np.int64)
    left = np.left_shift(acc, np.maximum(-s, 0))
    right = np.maximum(s, 0)
    half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    return np.right_shift(left + half, right)


def _dense(x: np.ndarray, layer: IntegerLayer) -> np.ndarray:
    acc = np.rint(x @ layer.weight.astype(np.float64).T).astype(np.int64) + layer.bias.astype(np.int64)
    return np.clip(_round_shift(acc, layer.shift), layer.lo, layer.hi).astype(np.float64)


def _requantize_torch(acc: torch.Tensor, layer: IntegerLayer, dim: int) -> torch.Tensor:
    shape = [1] * acc.dim()
    shape[dim] = -1
    s = torch.as_tensor(layer.shift.astype(np.int64), device=acc.device).reshape(shape)
    left = torch.bitwise_left_shift(acc, (-s).clamp_min(0))
    right = s.clamp_min(0)
    half = torch.where(right > 0, torch.bitwise_left_shift(torch.ones_like(right), (right - 1).clamp_min(0)), 0)
    out = torch.bitwise_right_shift(left + half, right)
    lo = torch.as_tensor(layer.lo, device=acc.device).reshape(shape)
    hi = torch.as_tensor(layer.hi, device=acc.device).reshape(shape)
    return torch.maximum(torch.minimum(out, hi), lo)
