"""Train a lattice context model (format v3) on one block: seeded, budgeted, early stopping.

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

from codec import lattice
from codec.distributions import SCALES_PER_OCTAVE
from codec.model import Architecture
from codec.network import INPUT_EXP, LatticeModel
from codec.network import model_stack as _network_stack

#: Voxels this close to a crop's edge see zero padding that the full slice would not have.
_MARGIN = lattice.PAD


@dataclass(frozen=True)
class TrainBudget:
    """How much training a block gets."""

    steps: int = 300
    batch: int = 4
    crop: int = 48
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
    return _network_stack(torch.tensor(np.ascontiguousarray(volume), device=device), k)


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


def _mean_bits(model: LatticeModel, stack: torch.Tensor, grey: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Bits per voxel of the crops as the coder would spend them: each voxel under its own
    group's head (voxels near a crop's edge, which see padding the slice lacks, excluded)."""
    total = stack.new_zeros(())
    for g, bits in enumerate(model.bits(stack, grey)):
        total = total + (bits * lattice.gather(weight, g)).sum()
    return total / (weight.sum() * stack.shape[0])


#: Slices of a block whose voxels fit the least-squares starting point (spread through the block).
_LSQ_SLICES = 8
#: Voxels (per head) the least-squares start fits at most.
_LSQ_VOXELS = 65_536


def _ridge(design: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least squares with a tiny ridge (float64 normal equations): unique and well scaled even
    when the design is singular (constant regions, perfectly smooth ramps), where a plain
    minimum-norm solve can return large cancelling weights that float32 training would blur."""
    gram = design.T @ design
    ridge = 1e-9 * torch.trace(gram) / gram.shape[0] + 1e-12
    penalty = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device) * ridge
    penalty[-1, -1] = 0.0  # the last column is the constant: its weight is not shrunk
    return torch.linalg.solve(gram + penalty, design.T @ target)


def least_squares_start(model: LatticeModel, volume: np.ndarray, device: torch.device) -> None:
    """Start every head at the least-squares linear predictor of its raw causal neighbours.

    The output layer already has a linear skip from the raw neighbours, so the closed-form
    least-squares fit over a few slices is a point the network can represent exactly: training
    starts from it (mean from the fit, one scale from its residuals) instead of from noise, and
    can only improve on it (the best validated weights are kept). Encoder-side only.
    """
    arch = model.arch
    z = volume.shape[0]
    rng = np.random.default_rng(0)
    picks = np.unique(np.linspace(min(1, z - 1), z - 1, min(_LSQ_SLICES, z)).round().astype(int))
    stack = model_stack(volume, arch.k, device)[picks]
    grey = torch.as_tensor(volume[picks], device=device).to(torch.float64)
    h, w = volume.shape[1:]
    planes = lattice.pad(stack[:, [1, 0]].double())
    m = lattice.PAD if min(h, w) > 4 * lattice.PAD else 0  # no zero padding in the fit
    inside = torch.zeros((h, w), dtype=torch.bool, device=device)
    inside[m : h - m, m : w - m] = True
    for g, output in enumerate(model.outputs):
        assert isinstance(output, torch.nn.Linear)
        keep = lattice.gather(inside, g)
        raw = lattice.neighbours_at_group(planes, g, h, w)[:, :, keep]  # (N, R, n)
        design = raw.transpose(1, 2).reshape(-1, raw.shape[1])
        target = ((lattice.gather(grey, g)[:, keep] - lattice.CENTER) / 2**INPUT_EXP).reshape(-1, 1)
        if design.shape[0] > _LSQ_VOXELS:  # a seeded sample fits as well and far faster
            rows = torch.as_tensor(rng.choice(design.shape[0], _LSQ_VOXELS, replace=False), device=device)
            design, target = design[rows], target[rows]
        if design.shape[0] < 4 * (design.shape[1] + 1):
            continue  # too few voxels to fit (a tiny block): keep the default start
        design = torch.cat([design, torch.ones_like(design[:, :1])], dim=1)
        coef = _ridge(design, target.squeeze(1))
        residual = (target.squeeze(1) - design @ coef) * 2**INPUT_EXP  # grey levels
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
) -> tuple[LatticeModel, TrainReport]:
    """Fit a :class:`LatticeModel` to ``volume`` (uint8, (Z, H, W)) and return the best one.

    Deterministic for a given seed and device. ``initial_state`` warm-starts from an earlier
    block's model (free on the encoder side: only the final weights travel).
    """
    start = time.monotonic()
    torch.manual_seed(seed)
    model = LatticeModel(arch).to(device)
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
