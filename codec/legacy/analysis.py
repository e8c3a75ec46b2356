"""What a learned container's model says about each voxel: prediction, confidence, bits spent.

For figures and per-slice / per-group bit rates (``emzip bench``). Uses the container's own
integer model on the original block, so the numbers are those the coder used: the mean (the
prediction), the distribution's entropy (how confident the model was) and the code length
-log2 p(voxel) (what the voxel cost; their sum matches the stream to within coding overhead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec import container
from codec.distributions import MEAN_FRACTION_BITS, SYMBOL_MAX, SYMBOL_MIN, negative_log2_likelihood, scale_table
from codec.errors import EmzipError
from codec.legacy import lattice, lattice_codec
from codec.legacy.decode import architecture as _architecture
from codec.legacy.decode import decode_frozen as _decode_frozen

__all__ = ["VoxelAnalysis", "analyse_learned"]


@dataclass(frozen=True)
class VoxelAnalysis:
    """Per-voxel maps, each (z, y, x) float64."""

    prediction: np.ndarray
    bits: np.ndarray
    group_of_voxel: np.ndarray
    """(y, x) index of the lattice group that codes each voxel of a slice."""
    family: str
    scale: np.ndarray
    """Per-voxel scale of the distribution."""

    def entropy(self, z: int) -> np.ndarray:
        """Expected code length (bits) of each voxel of slice ``z``: dark = confident in figures."""
        return _entropy(self.family, self.prediction[z], self.scale[z])

    def bits_per_slice(self) -> list[float]:
        """Mean code length of each slice."""
        return [float(v) for v in self.bits.mean(axis=(1, 2))]

    def bits_per_group(self) -> list[float]:
        """Mean code length of the voxels of each lattice group (coding order)."""
        return [float(self.bits[:, self.group_of_voxel == g].mean()) for g in range(len(lattice.GROUPS))]


def _entropy(family: str, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    values = torch.arange(SYMBOL_MIN, SYMBOL_MAX + 1, dtype=torch.float64).view(-1, 1, 1)
    m = torch.as_tensor(mean, dtype=torch.float64).unsqueeze(0)
    s = torch.as_tensor(scale, dtype=torch.float64).unsqueeze(0)
    bits = negative_log2_likelihood(family, values, m, s)
    probability = torch.exp2(-bits)
    probability = probability / probability.sum(dim=0, keepdim=True)
    return (probability * bits).sum(dim=0).numpy()


def analyse_learned(data: bytes, volume: np.ndarray) -> VoxelAnalysis:
    """Evaluate the container's model on ``volume`` (the block it encodes); learned containers
    of the current format only."""
    parsed = container.unpack(data)
    if parsed.header.codec != "learned":
        raise EmzipError(f"container holds {parsed.header.codec}, not a learned model")
    if parsed.version != container.FORMAT_VERSION:
        raise EmzipError(f"analysis reads format v{container.FORMAT_VERSION} models, not v{parsed.version}")
    arch = _architecture(parsed.config)
    model = _decode_frozen(arch, parsed.model)
    block = np.ascontiguousarray(volume.reshape((-1, *volume.shape[-2:])), dtype=np.uint8)
    z, h, w = block.shape
    mean16 = torch.zeros((z, h, w), dtype=torch.int64)
    scale_index = torch.zeros((z, h, w), dtype=torch.int64)
    with torch.no_grad():
        for i, groups in enumerate(lattice_codec.block_parameters(model, block)):
            for g, (m, s) in enumerate(groups):
                index = lattice.flat_positions(g, h, w)
                mean16[i].view(-1)[index] = torch.as_tensor(m)
                scale_index[i].view(-1)[index] = torch.as_tensor(s)
    mean16_np, scale_np = mean16.numpy(), scale_index.numpy()
    mean = mean16_np.astype(np.float64) / (1 << MEAN_FRACTION_BITS)
    scale = scale_table()[scale_np]
    bits = negative_log2_likelihood(
        arch.family,
        torch.as_tensor(block, dtype=torch.float64),
        torch.as_tensor(mean),
        torch.as_tensor(scale),
    ).numpy()
    group_of_voxel = np.zeros(h * w, np.int64)
    for g in range(len(lattice.GROUPS)):
        group_of_voxel[lattice.flat_positions(g, h, w).numpy()] = g
    return VoxelAnalysis(np.clip(mean, SYMBOL_MIN, SYMBOL_MAX), bits, group_of_voxel.reshape(h, w), arch.family, scale)
