"""The float model that v4 training fits; :mod:`codec.v4.freeze` turns it into integers.

mean (grey - 128) = skip(c) + out_0(h),  scale index = SCALES_PER_OCTAVE * out_1(h) + SCALE_OFFSET,
h = relu(l2(relu(l1(c / INPUT_DIVISOR)))), c the context (:mod:`codec.v4.context`).

The skip is a linear predictor over the raw context, started from the block's least-squares
fit (solved in float64: float32 gets it badly wrong on EM design matrices). The network learns
what the linear predictor misses and the scale; its loss is the coded distribution's bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from codec.distributions import SCALES_PER_OCTAVE

INPUT_DIVISOR = 32.0
#: Scale index the output starts near (0.25 * 2**(36/12) = 2 grey levels).
SCALE_OFFSET = 36.0


class RasterModel(nn.Module):
    """Two hidden ReLU layers over the context, a linear skip for the mean."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.skip = nn.Linear(inputs, 1)
        self.l1 = nn.Linear(inputs, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)

    def hidden_layers(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = torch.relu(self.l1(context / INPUT_DIVISOR))
        return h1, torch.relu(self.l2(h1))

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean of grey - 128, continuous scale index) per row of ``context`` (float)."""
        _, h2 = self.hidden_layers(context)
        out = self.out(h2)
        return self.skip(context)[:, 0] + out[:, 0], SCALES_PER_OCTAVE * out[:, 1] + SCALE_OFFSET

    def fit_skip(self, context: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Set the skip to the least-squares predictor of ``target`` (grey - 128) from ``context``;
        returns its residuals."""
        design = np.concatenate([context.astype(np.float64), np.ones((context.shape[0], 1))], axis=1)
        solution, *_ = np.linalg.lstsq(design, target.astype(np.float64), rcond=None)
        with torch.no_grad():
            self.skip.weight.copy_(torch.tensor(solution[:-1], dtype=torch.float32)[None, :])
            self.skip.bias.fill_(float(solution[-1]))
        return target.astype(np.float64) - design @ solution

    def start_scale(self, residuals: np.ndarray, family: str) -> None:
        """Start the scale output at the spread of the skip's residuals (in octaves, as it is learned):
        without it, Adam's small steps would take thousands of steps to reach a noisy block's scale."""
        spread = np.mean(np.abs(residuals)) if family == "laplace" else np.sqrt(np.mean(residuals**2))
        octaves = math.log2(max(float(spread), 0.25) / 0.25) - SCALE_OFFSET / SCALES_PER_OCTAVE
        with torch.no_grad():
            self.out.bias[1] = octaves
