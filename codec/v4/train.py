"""Fit a v4 model to one block on sampled voxels; warm starts carry a model to the next block.

Training never sees whole slices: it draws a seeded sample of voxels with their exact coded
context (:func:`codec.v4.context.features`), so its cost is set by the step budget, not by
the block's size. A warm start (the previous block's state) refits only the least-squares
skip and then trains ``steps`` more, usually far fewer: neighbouring blocks of one
acquisition share their statistics (bench/RESULTS.md, v4 table).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from codec.distributions import continuous_scale, negative_log2_likelihood
from codec.v4.context import Context, features
from codec.v4.model import RasterModel

#: Voxels sampled for training and for the least-squares fit.
POOL = 131_072
BATCH = 4096
LEARNING_RATE = 2e-2
#: Learning rate of the few steps a warm-started model takes (a high one first undoes what it knows).
WARM_LEARNING_RATE = 5e-3


@dataclass(frozen=True)
class Sample:
    """A seeded sample of a block's voxels: context (n, inputs) int16 and grey - 128 (n,)."""

    context: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class TrainReport:
    """What training did, for the container's metadata and the provenance record."""

    steps: int
    seconds: float
    validation_bits: float
    stopped_early: bool
    device: str


@dataclass(frozen=True)
class TrainResult:
    model: RasterModel
    steps: int
    seconds: float
    bits: float  # model's mean bits per voxel on the sample after training (float, ideal)
    warm: bool  # started from the previous block's model


def sample_block(volume: np.ndarray, context: Context, stripes: int, seed: int, size: int = POOL) -> Sample:
    """Draw ``size`` voxels (all of them if the block is smaller) with their coded context."""
    depth, rows, cols = volume.shape
    total = depth * rows * cols
    rng = np.random.default_rng(seed)
    flat = rng.choice(total, size=size, replace=False) if total > size else np.arange(total)
    z, rest = np.divmod(flat, rows * cols)
    y, x = np.divmod(rest, cols)
    target = volume[z, y, x].astype(np.int16) - 128
    return Sample(features(volume, context, stripes, z, y, x), target)


def sample_bits(model: RasterModel, sample: Sample, family: str) -> float:
    """Mean bits per voxel of ``sample`` under the float model."""
    with torch.no_grad():
        ctx = torch.from_numpy(sample.context.astype(np.float32))
        mean, index = model(ctx)
        grey = torch.from_numpy(sample.target.astype(np.float32)) + 128.0
        return float(negative_log2_likelihood(family, grey, mean + 128.0, continuous_scale(index)).mean())


def least_squares_model(sample: Sample, family: str, hidden: int, seed: int) -> RasterModel:
    """A fresh model whose mean is the block's least-squares predictor and whose scale is the
    spread of its residuals: where training from scratch starts, and the bar a warm start must clear."""
    torch.manual_seed(seed)
    model = RasterModel(sample.context.shape[1], hidden)
    model.start_scale(model.fit_skip(sample.context, sample.target), family)
    return model


def train(
    sample: Sample,
    family: str,
    hidden: int,
    steps: int,
    seed: int,
    warm: dict[str, torch.Tensor] | None = None,
    warm_steps: int = 0,
    device: torch.device | None = None,
) -> TrainResult:
    """Train ``steps`` Adam steps from the least-squares start, or ``warm_steps`` from ``warm``.

    A warm start (the previous block's model, unchanged) is kept only when it codes this
    block's sample in fewer bits than the block's own least-squares predictor; otherwise the
    block trains from scratch: a change of content costs training time rather than falling
    back to a model that no longer fits.
    """
    start = time.monotonic()
    model = least_squares_model(sample, family, hidden, seed)
    warmed = False
    if warm is not None:
        candidate = RasterModel(sample.context.shape[1], hidden)
        candidate.load_state_dict(warm)
        if sample_bits(candidate, sample, family) < sample_bits(model, sample, family):
            model, steps, warmed = candidate, warm_steps, True
    rate = WARM_LEARNING_RATE if warmed else LEARNING_RATE
    _fit(model, sample, family, steps, seed, rate, not warmed, device or torch.device("cpu"))
    model.eval()
    return TrainResult(model, steps, time.monotonic() - start, sample_bits(model, sample, family), warmed)


def _fit(
    model: RasterModel,
    sample: Sample,
    family: str,
    steps: int,
    seed: int,
    rate: float,
    warmup: bool,
    device: torch.device,
) -> None:
    """Adam on batches of the sample on ``device``, cosine-decayed learning rate (after a linear
    warm-up from scratch). The model comes back on the CPU: only its frozen integers matter to
    the format, so the device changes no decoder's result."""
    if steps <= 0:
        return
    model.to(device)
    ctx = torch.from_numpy(sample.context.astype(np.float32)).to(device)
    grey = torch.from_numpy(sample.target.astype(np.float32)).to(device) + 128.0
    optimizer = torch.optim.Adam(model.parameters(), lr=rate)
    ramp = max(1, steps // 20) if warmup else 0

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1.0 + math.cos(math.pi * (step - ramp) / max(steps - ramp, 1)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(0, ctx.shape[0], (min(BATCH, ctx.shape[0]),), generator=generator).to(device)
        mean, index = model(ctx[pick])
        loss = negative_log2_likelihood(family, grey[pick], mean + 128.0, continuous_scale(index)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.cpu()
