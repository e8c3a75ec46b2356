"""The float context model of format v3, as training optimizes it (never used for coding).

A trunk of 3x3 convolutions reads the previous ``k`` slices once per slice; one small head per
lattice group (:mod:`codec.legacy.lattice`) combines the trunk's features at a voxel with its raw
neighbours (previous-slice window, earlier groups around it) and gives the mean and the scale
index of the voxel's distribution. :mod:`codec.legacy.freeze` turns it into the exact integer model.
"""

from __future__ import annotations

import torch
from torch import nn

from codec.distributions import continuous_scale, negative_log2_likelihood
from codec.legacy import lattice
from codec.legacy.model import Architecture

#: Centred voxels enter the model as integers with real value v / 2**INPUT_EXP.
INPUT_EXP = 6


def _head(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())


class LatticeModel(nn.Module):
    """Trunk over previous slices, one head (with a linear skip to its output) per group."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        layers: list[nn.Module] = []
        channels_in = arch.k
        for _ in range(arch.trunk_layers):
            layers += [nn.Conv2d(channels_in, arch.trunk_channels, 3, padding=1), nn.ReLU()]
            channels_in = arch.trunk_channels
        self.trunk = nn.Sequential(*layers)
        widths = [lattice.head_input_width(g, arch.trunk_channels) for g in range(len(lattice.GROUPS))]
        self.heads = nn.ModuleList(_head(w, arch.head_hidden) for w in widths)
        self.outputs = nn.ModuleList(nn.Linear(arch.head_hidden + w, 2) for w in widths)
        for out in self.outputs:
            assert isinstance(out, nn.Linear)
            with torch.no_grad():
                out.weight.mul_(0.1)
                out.bias.copy_(torch.tensor([0.0, 60.0]))

    def forward(self, stack: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Predict the voxels of each group of the current slices from what the decoder sees.

        ``stack`` is (N, 1 + k, H, W) of centred values / 2**INPUT_EXP: channel 0 the slice
        being coded (teacher forcing: its earlier groups hold the true voxels), channels 1..
        its previous slices. Returns per group (means in grey levels, scale indices), each
        (N, n_group) in the group's stream order: the inputs come from the same gathers the
        coder uses (:func:`codec.legacy.lattice.neighbours_at_group`).
        """
        h, w = stack.shape[-2:]
        features = self.trunk(stack[:, 1:])
        planes = lattice.pad(stack[:, [1, 0]])  # previous slice, current slice
        out = []
        for g, (head, output) in enumerate(zip(self.heads, self.outputs, strict=True)):
            raw = lattice.neighbours_at_group(planes, g, h, w)
            x = torch.cat([lattice.gather(features, g), raw], dim=1).transpose(1, 2)  # (N, n, F)
            y = output(torch.cat([head(x), x], dim=-1))
            out.append((lattice.CENTER + (2**INPUT_EXP) * y[..., 0], y[..., 1]))
        return out

    def bits(self, stack: torch.Tensor, grey: torch.Tensor) -> list[torch.Tensor]:
        """Per group, the code length in bits (N, n_group) of the true slices ``grey`` (N, H, W)."""
        return [
            negative_log2_likelihood(self.arch.family, lattice.gather(grey, g), mean, continuous_scale(index))
            for g, (mean, index) in enumerate(self(stack))
        ]


def model_stack(volume: torch.Tensor, k: int) -> torch.Tensor:
    """(Z, 1 + k, H, W) float32 model input for a uint8 (Z, H, W) tensor."""
    scaled = (volume.to(torch.float32) - lattice.CENTER) / (2**INPUT_EXP)
    return torch.cat([scaled.unsqueeze(1), lattice.previous_slices(scaled, k)], dim=1)
