"""Train a context model on one block: seeded, budgeted, with early stopping.

Training sees random crops of random slices (teacher forcing: every causal neighbour is the
true voxel, exactly what the decoder will have). A fixed, seeded validation set of crops picks
the best weights and stops training when they stop improving.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from codec import context
from codec.distributions import SCALES_PER_OCTAVE
from codec.model import Architecture, ContextModel

#: Voxels this close to a crop's edge see zero padding that the full slice would not have.
_MARGIN = 3


@dataclass(frozen=True)
class TrainBudget:
    """How much training a block gets."""

    steps: int = 1500
    batch: int = 8
    crop: int = 64
    learning_rate: float = 3e-3
    eval_every: int = 100
    patience: int = 4
    max_seconds: float | None = None


@dataclass(frozen=True)
class TrainReport:
    """What training did, for the container's metadata and the provenance record."""

    steps: int
    seconds: float
    validation_bits: float
    stopped_early: bool
    device: str


def model_stack(volume: np.ndarray, k: int, device: torch.device) -> torch.Tensor:
    """(Z, 1 + k, H, W) float32 model input for a uint8 block: each slice and its predecessors."""
    centred = torch.as_tensor(volume, device=device).to(torch.float32) - context.CENTER
    scaled = centred / (2**context.INPUT_EXP)
    return torch.cat([scaled.unsqueeze(1), context.previous_slices(scaled, k)], dim=1)


class _Sampler:
    """Draws batches of crops of (stack, grey, weight) from one block."""

    def __init__(self, volume: np.ndarray, k: int, crop: int, device: torch.device, seed: int):
        self.stack = model_stack(volume, k, device)
        self.grey = torch.as_tensor(volume, device=device).to(torch.float32)
        self.z, self.h, self.w = volume.shape
        self.ch = min(crop + 2 * _MARGIN, self.h)
        self.cw = min(crop + 2 * _MARGIN, self.w)
        self.rng = np.random.default_rng(seed)
        weight = torch.ones((self.ch, self.cw), device=device)
        if self.ch < self.h:
            weight[:_MARGIN] = 0
            weight[-_MARGIN:] = 0
        if self.cw < self.w:
            weight[:, :_MARGIN] = 0
            weight[:, -_MARGIN:] = 0
        self.weight = weight

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zs = self.rng.integers(0, self.z, n)
        ys = self.rng.integers(0, self.h - self.ch + 1, n)
        xs = self.rng.integers(0, self.w - self.cw + 1, n)
        stacks = [self.stack[z, :, y : y + self.ch, x : x + self.cw] for z, y, x in zip(zs, ys, xs, strict=False)]
        greys = [self.grey[z, y : y + self.ch, x : x + self.cw] for z, y, x in zip(zs, ys, xs, strict=False)]
        return torch.stack(stacks), torch.stack(greys), self.weight


#: Share of a row's voxels that each pass codes: weights each head's loss so that the mean is
#: the expected bits per voxel of the real coding order.
_PASS_SHARE = torch.tensor([1.0 / period for period, _ in context.PASSES])


def _mean_bits(model: ContextModel, stack: torch.Tensor, grey: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Expected bits per voxel: every head predicts every voxel (more signal per step), and the
    heads are weighted by the share of voxels they code."""
    bits = model.bits(stack, grey)  # (N, passes, H, W)
    per_pass = (bits * weight).sum(dim=(0, 2, 3)) / (weight.sum() * bits.shape[0])
    return (per_pass * _PASS_SHARE.to(per_pass.device)).sum()


#: Slices of a block whose voxels fit the least-squares starting point (spread through the block).
_LSQ_SLICES = 8


def _ridge(design: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least squares with a tiny ridge (float64 normal equations): unique and well scaled even
    when the design is singular (constant regions, perfectly smooth ramps), where a plain
    minimum-norm solve can return large cancelling weights that float32 training would blur."""
    gram = design.T @ design
    ridge = 1e-9 * torch.trace(gram) / gram.shape[0] + 1e-12
    penalty = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device) * ridge
    penalty[-1, -1] = 0.0  # the last column is the constant: its weight is not shrunk
    return torch.linalg.solve(gram + penalty, design.T @ target)


def least_squares_start(model: ContextModel, volume: np.ndarray, device: torch.device) -> None:
    """Start every head at the least-squares linear predictor of its raw causal neighbours.

    The output layer already has a linear skip from the raw neighbours, so the closed-form
    least-squares fit over a few slices is a point the network can represent exactly: training
    starts from it (mean from the fit, one scale from its residuals) instead of from noise, and
    can only improve on it (the best validated weights are kept). Encoder-side only.
    """
    arch = model.arch
    z = volume.shape[0]
    picks = np.unique(np.linspace(min(1, z - 1), z - 1, min(_LSQ_SLICES, z)).round().astype(int))
    stack = model_stack(volume, arch.k, device)[picks]
    grey = torch.as_tensor(volume[picks], device=device).to(torch.float64)
    current, previous = stack[:, 0].double(), stack[:, 1].double()
    m = context.PAD_X if min(volume.shape[1:]) > 4 * context.PAD_X else 0  # no zero padding in the fit
    for p, output in enumerate(model.outputs):
        assert isinstance(output, torch.nn.Linear)
        raw = context.neighbour_features(current, previous, p)
        raw = raw[:, :, m : raw.shape[2] - m, m : raw.shape[3] - m]
        design = raw.permute(0, 2, 3, 1).reshape(-1, raw.shape[1])
        design = torch.cat([design, torch.ones_like(design[:, :1])], dim=1)
        target = (
            (grey[:, m : grey.shape[1] - m, m : grey.shape[2] - m] - context.CENTER) / 2**context.INPUT_EXP
        ).reshape(-1, 1)
        coef = _ridge(design, target.squeeze(1))
        residual = (target.squeeze(1) - design @ coef) * 2**context.INPUT_EXP  # grey levels
        spread = residual.abs().mean() if arch.family == "laplace" else residual.std()
        scale_index = SCALES_PER_OCTAVE * torch.log2(spread.clamp_min(0.25) / 0.25)
        raw_start = output.in_features - raw.shape[1]
        with torch.no_grad():
            output.weight.zero_()
            output.weight[0, raw_start:] = coef[:-1].to(output.weight.dtype)
            output.bias[0] = coef[-1].to(output.bias.dtype)
            output.bias[1] = scale_index.to(output.bias.dtype)


def train_model(
    volume: np.ndarray,
    arch: Architecture,
    budget: TrainBudget,
    device: torch.device,
    seed: int,
    initial_state: dict[str, torch.Tensor] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[ContextModel, TrainReport]:
    """Fit a :class:`ContextModel` to ``volume`` (uint8, (Z, H, W)) and return the best one.

    Deterministic for a given seed and device. ``initial_state`` warm-starts from an earlier
    block's model (free on the encoder side: only the final weights travel).
    """
    start = time.monotonic()
    torch.manual_seed(seed)
    model = ContextModel(arch).to(device)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    else:
        least_squares_start(model, volume, device)
    sampler = _Sampler(volume, arch.k, budget.crop, device, seed)
    validation = [sampler.batch(budget.batch) for _ in range(2)]
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * min(s / max(budget.steps, 1), 1.0)))
    )

    def validate() -> float:
        with torch.no_grad():
            return float(sum(_mean_bits(model, *b) for b in validation) / len(validation))

    best_bits = validate()
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stale = 0
    stopped_early = False
    step = 0
    for step in range(1, budget.steps + 1):
        loss = _mean_bits(model, *sampler.batch(budget.batch))
        if not torch.isfinite(loss):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        if step % budget.eval_every == 0 or step == budget.steps:
            bits = validate()
            if progress is not None:
                progress(step, bits)
            if bits < best_bits - 1e-4:
                best_bits, stale = bits, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= budget.patience:
                    stopped_early = True
                    break
            if budget.max_seconds is not None and time.monotonic() - start > budget.max_seconds:
                stopped_early = True
                break
    model.load_state_dict(best_state)
    model.eval()
    report = TrainReport(
        steps=step,
        seconds=time.monotonic() - start,
        validation_bits=best_bits,
        stopped_early=stopped_early,
        device=str(device),
    )
    return model, report
