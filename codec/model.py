"""The float context model that training optimizes (it is never used for coding).

A trunk of 3x3 convolutions reads the previous ``k`` slices once per slice; a small per-voxel
head per pass combines the trunk's features at a voxel with its raw causal neighbours and gives
the distribution's mean and scale index. After training, :mod:`codec.quantize` turns it into
the integer model that coding uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from codec import context
from codec.distributions import negative_log2_likelihood


@dataclass(frozen=True)
class Architecture:
    """The shape of a context model; stored in every container that uses one."""

    k: int = 2
    trunk_channels: int = 16
    trunk_layers: int = 3
    head_hidden: int = 16
    family: str = "laplace"

    def to_json(self) -> dict[str, object]:
        return {
            "k": self.k,
            "trunk_channels": self.trunk_channels,
            "trunk_layers": self.trunk_layers,
            "head_hidden": self.head_hidden,
            "family": self.family,
        }


class ContextModel(nn.Module):
    """Float slice-context model: trunk over previous slices, one head per in-row pass."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        layers: list[nn.Module] = []
        channels_in = arch.k
        for _ in range(arch.trunk_layers):
            layers.append(nn.Conv2d(channels_in, arch.trunk_channels, 3, padding=1))
            layers.append(nn.ReLU())
            channels_in = arch.trunk_channels
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(context.head_input_width(p, arch.trunk_channels), arch.head_hidden),
                nn.ReLU(),
                nn.Linear(arch.head_hidden, arch.head_hidden),
                nn.ReLU(),
            )
            for p in range(len(context.PASSES))
        )
        # The output layer sees the hidden features and, as a linear skip, the head's inputs.
        self.outputs = nn.ModuleList(
            nn.Linear(arch.head_hidden + context.head_input_width(p, arch.trunk_channels), 2)
            for p in range(len(context.PASSES))
        )
        for out in self.outputs:
            assert isinstance(out, nn.Linear)
            with torch.no_grad():
                out.weight.mul_(0.1)
                out.bias.copy_(torch.tensor([0.0, 60.0]))

    def forward(self, stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict every voxel of the current slice as if it belonged to each pass.

        ``stack`` is (N, 1 + k, H, W) of centred values scaled by 2**-INPUT_EXP: channel 0 the
        slice being coded, channels 1.. its previous slices. Returns (means, scale indices),
        each (N, passes, H, W) with the pass on dim 1; means in grey levels.
        """
        current = stack[:, 0]
        previous = stack[:, 1:]
        features = self.trunk(previous)
        means, indices = [], []
        for p, (head, output) in enumerate(zip(self.heads, self.outputs, strict=False)):
            raw = context.neighbour_features(current, previous[:, 0], p)
            x = torch.cat([features, raw], dim=1).permute(0, 2, 3, 1)
            out = output(torch.cat([head(x), x], dim=-1))
            means.append(context.CENTER + (2**context.INPUT_EXP) * out[..., 0])
            indices.append(out[..., 1])
        return torch.stack(means, dim=1), torch.stack(indices, dim=1)

    def bits(self, stack: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
        """Per-voxel code length in bits, (N, passes, H, W), for the current slices ``grey``."""
        from codec.distributions import continuous_scale

        means, indices = self(stack)
        return negative_log2_likelihood(self.arch.family, grey.unsqueeze(1), means, continuous_scale(indices))
