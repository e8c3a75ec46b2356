"""The frozen v3 model: integer layers, their bytes in a container, and batched exact inference.

Layer order (also the storage order): the trunk's 3x3 convolutions, then per lattice group its
two hidden layers and its output layer (mean on the 1/16 grey grid, scale index), whose inputs
are the second hidden layer followed by the head's own inputs (a linear skip). Every layer's
partial sums are proven below 2**24 when the model is built or read (:mod:`codec.legacy.exact`), so
inference in float32 is exact on any device, and many blocks' models run as one batched call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec.distributions import MEAN_FRACTION_BITS, N_SCALES
from codec.errors import CorruptDataError
from codec.legacy import exact, lattice
from codec.legacy.model import Architecture

#: Trunk and hidden weights are int8, output weights int16; activations 10 bits.
HIDDEN_WEIGHT_BITS = 8
OUTPUT_WEIGHT_BITS = 16
ACTIVATION_BITS = 10
ACTIVATION_MAX = (1 << ACTIVATION_BITS) - 1
#: Largest |centred voxel| entering the model (voxels are 0..255, centred on 128).
INPUT_MAX = 128
MEAN_MAX = 255 << MEAN_FRACTION_BITS
#: Head voxels evaluated per matrix product (keeps the operands in cache).
HEAD_CHUNK = 16_384


@dataclass(frozen=True)
class LayerSpec:
    """Shape, storage type and ranges of one layer, all implied by the architecture."""

    shape: tuple[int, ...]
    dtype: str
    lo: np.ndarray
    hi: np.ndarray
    input_max: np.ndarray

    @property
    def weight_limit(self) -> int:
        return (1 << (8 * np.dtype(self.dtype).itemsize - 1)) - 1


def layer_specs(arch: Architecture) -> list[LayerSpec]:
    """Every layer of a v3 model in storage order."""
    act = np.full(arch.trunk_channels, ACTIVATION_MAX, np.int64)
    hidden = np.full(arch.head_hidden, ACTIVATION_MAX, np.int64)
    relu_lo = np.zeros(arch.trunk_channels, np.int64)
    specs = []
    inputs = np.full(arch.k, INPUT_MAX, np.int64)
    for _ in range(arch.trunk_layers):
        specs.append(LayerSpec((arch.trunk_channels, inputs.size, 3, 3), "<i1", relu_lo, act, inputs))
        inputs = act
    for g in range(len(lattice.GROUPS)):
        raw = lattice.head_input_width(g, 0)
        head_in = np.concatenate([act, np.full(raw, INPUT_MAX, np.int64)])
        h_lo = np.zeros(arch.head_hidden, np.int64)
        specs.append(LayerSpec((arch.head_hidden, head_in.size), "<i1", h_lo, hidden, head_in))
        specs.append(LayerSpec((arch.head_hidden, arch.head_hidden), "<i1", h_lo, hidden, hidden))
        out_in = np.concatenate([hidden, head_in])
        lo, hi = np.array([0, 0], np.int64), np.array([MEAN_MAX, N_SCALES - 1], np.int64)
        specs.append(LayerSpec((2, out_in.size), "<i2", lo, hi, out_in))
    return specs


class FrozenModel:
    """A v3 model whose every layer is proven exact in float32."""

    def __init__(self, arch: Architecture, layers: list[exact.ExactLayer]) -> None:
        specs = layer_specs(arch)
        if len(layers) != len(specs):
            raise exact.BoundError(f"{len(layers)} layers, the architecture has {len(specs)}")
        for i, (layer, spec) in enumerate(zip(layers, specs, strict=True)):
            if layer.weight.shape != spec.shape:
                raise exact.BoundError(f"layer {i}: weights {layer.weight.shape}, expected {spec.shape}")
            exact.check_bounds(layer, spec.input_max, f"layer {i}")
        self.arch = arch
        self.layers = layers

    def to_bytes(self) -> bytes:
        """Per layer: weights (int8, or int16 for output layers), bias int32, shift int8."""
        parts = []
        for layer, spec in zip(self.layers, layer_specs(self.arch), strict=True):
            parts += [
                layer.weight.astype(spec.dtype).tobytes(),
                layer.bias.astype("<i4").tobytes(),
                layer.shift.astype("<i1").tobytes(),
            ]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, arch: Architecture, data: bytes) -> FrozenModel:
        """Inverse of :meth:`to_bytes`; a model of the wrong size or breaking the bound is refused."""
        specs = layer_specs(arch)
        expected = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize + 5 * s.shape[0] for s in specs)
        if len(data) != expected:
            raise CorruptDataError(f"model weights are {len(data)} bytes, the architecture needs {expected}")
        layers, offset = [], 0
        for spec in specs:
            size = int(np.prod(spec.shape))
            dtype = np.dtype(spec.dtype)
            weight = np.frombuffer(data, dtype, size, offset).reshape(spec.shape).astype(np.int64)
            offset += size * dtype.itemsize
            bias = np.frombuffer(data, "<i4", spec.shape[0], offset).astype(np.int64)
            offset += 4 * spec.shape[0]
            shift = np.frombuffer(data, "<i1", spec.shape[0], offset).astype(np.int64)
            offset += spec.shape[0]
            layers.append(exact.ExactLayer(weight, bias, shift, spec.lo, spec.hi))
        try:
            return cls(arch, layers)
        except exact.BoundError as exc:
            raise CorruptDataError(f"model refused: {exc}") from exc


class BatchedModel:
    """B frozen models of one architecture as stacked float32 tensors on one device."""

    def __init__(self, models: list[FrozenModel], device: torch.device) -> None:
        arch = models[0].arch
        if any(m.arch != arch for m in models):
            raise ValueError("models of one batch must share an architecture")
        self.arch = arch
        self.device = device
        self.count = len(models)
        stacked = [exact.TorchLayer.stack([m.layers[i] for m in models], device) for i in range(len(models[0].layers))]
        self.trunk = stacked[: arch.trunk_layers]
        rest = stacked[arch.trunk_layers :]
        self.heads = [rest[3 * g : 3 * g + 3] for g in range(len(lattice.GROUPS))]
        # The output layer's weights split into the part for the hidden layer and the skip part.
        self.out_parts = [
            (out.weight[:, :, : arch.head_hidden].contiguous(), out.weight[:, :, arch.head_hidden :].contiguous())
            for _, _, out in self.heads
        ]

    def trunk_features(self, previous: torch.Tensor) -> torch.Tensor:
        """(B, N, k, H, W) centred previous slices -> (B, N, C, H, W) integer features."""
        with exact.exact_mode():
            x = previous
            for layer in self.trunk:
                x = layer.conv3x3(x)
            return x

    def head(self, group: int, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, n) head inputs -> (mean on the 1/16 grid, scale index), each (B, n) float32."""
        hidden1, hidden2, out = self.heads[group]
        w_hidden, w_skip = self.out_parts[group]
        if inputs.shape[-1] == 0:  # a group with no voxels in a tiny slice
            empty = inputs.new_zeros((inputs.shape[0], 0))
            return empty, empty
        results = []
        with exact.exact_mode():
            for start in range(0, inputs.shape[-1], HEAD_CHUNK):
                x = inputs[..., start : start + HEAD_CHUNK]
                h = hidden2.dense(hidden1.dense(x))
                acc = torch.baddbmm(torch.baddbmm(out.offset, w_skip, x), w_hidden, h)
                results.append(out.finish(acc))
        result = torch.cat(results, dim=-1)
        return result[:, 0], result[:, 1]
