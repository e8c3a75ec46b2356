"""What a learned container's model says about each voxel: prediction, confidence, bits spent.

For figures and per-slice / per-pass bit rates (``emzip bench``). Uses the container's own
integer model on the original block, so the numbers are those the coder used: the mean (the
prediction), the distribution's entropy (how confident the model was) and the code length
-log2 p(voxel) (what the voxel cost; their sum matches the stream to within coding overhead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec import container, context, learned
from codec.api import _architecture, _decode_model
from codec.distributions import MEAN_FRACTION_BITS, SYMBOL_MAX, SYMBOL_MIN, negative_log2_likelihood, scale_table
from codec.errors import EmzipError

__all__ = ["VoxelAnalysis", "analyse_learned"]


@dataclass(frozen=True)
class VoxelAnalysis:
    """Per-voxel maps, each (z, y, x) float64."""

    prediction: np.ndarray
    bits: np.ndarray
    pass_of_column: np.ndarray
    """(x,) index of the in-row pass that codes each column."""
    family: str
    scale: np.ndarray
    """Per-voxel scale of the distribution."""

    def entropy(self, z: int) -> np.ndarray:
        """Expected code length (bits) of each voxel of slice ``z``: dark = confident in figures."""
        return _entropy(self.family, self.prediction[z], self.scale[z])

    def bits_per_slice(self) -> list[float]:
        """Mean code length of each slice."""
        return [float(v) for v in self.bits.mean(axis=(1, 2))]

    def bits_per_pass(self) -> list[float]:
        """Mean code length of the voxels of each in-row pass (coding order)."""
        return [float(self.bits[:, :, self.pass_of_column == p].mean()) for p in range(len(context.PASSES))]


def _entropy(family: str, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    values = torch.arange(SYMBOL_MIN, SYMBOL_MAX + 1, dtype=torch.float64).view(-1, 1, 1)
    m = torch.as_tensor(mean, dtype=torch.float64).unsqueeze(0)
    s = torch.as_tensor(scale, dtype=torch.float64).unsqueeze(0)
    bits = negative_log2_likelihood(family, values, m, s)
    probability = torch.exp2(-bits)
    probability = probability / probability.sum(dim=0, keepdim=True)
    return (probability * bits).sum(dim=0).numpy()


def analyse_learned(data: bytes, volume: np.ndarray) -> VoxelAnalysis:
    """Evaluate the container's model on ``volume`` (the block it encodes); learned containers only."""
    parsed = container.unpack(data)
    if parsed.header.codec != "learned":
        raise EmzipError(f"container holds {parsed.header.codec}, not a learned model")
    arch = _architecture(parsed.config)
    model = _decode_model(arch, parsed.model)
    block = np.ascontiguousarray(volume.reshape((-1, *volume.shape[-2:])), dtype=np.uint8)
    with torch.no_grad():
        mean16, scale_index = learned.block_parameters(model, block)
    mean = mean16.astype(np.float64) / (1 << MEAN_FRACTION_BITS)
    scale = scale_table()[scale_index]
    bits = negative_log2_likelihood(
        arch.family,
        torch.as_tensor(block, dtype=torch.float64),
        torch.as_tensor(mean),
        torch.as_tensor(scale),
    ).numpy()
    width = block.shape[2]
    pass_of_column = np.zeros(width, np.int64)
    for p in range(len(context.PASSES)):
        pass_of_column[context.pass_columns(width, p)] = p
    return VoxelAnalysis(np.clip(mean, SYMBOL_MIN, SYMBOL_MAX), bits, pass_of_column, arch.family, scale)
