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
LEARNING_RATE = 4e-3


@dataclass(frozen=True)
class Sample:
    """A seeded sample of a block's voxels: context (n, inputs) int16 and grey - 128 (n,)."""

    context: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    model: RasterModel
    steps: int
    seconds: float
    bits: float  # model's mean bits per voxel on the sample after training (float, ideal)


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


def train(
    sample: Sample,
    family: str,
    hidden: int,
    steps: int,
    seed: int,
    warm: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train from the least-squares start (or ``warm``) for ``steps`` Adam steps."""
    start = time.monotonic()
    torch.manual_seed(seed)
    model = RasterModel(sample.context.shape[1], hidden)
    if warm is not None:
        model.load_state_dict(warm)
    model.fit_skip(sample.context, sample.target)
    ctx = torch.from_numpy(sample.context.astype(np.float32))
    grey = torch.from_numpy(sample.target.astype(np.float32)) + 128.0
    if steps > 0:
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        warmup = 0 if warm is not None else max(1, steps // 20)

        def rate(step: int) -> float:  # linear warm-up from scratch, then cosine decay to 0
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            pick = torch.randint(0, ctx.shape[0], (min(BATCH, ctx.shape[0]),), generator=generator)
            mean, index = model(ctx[pick])
            loss = negative_log2_likelihood(family, grey[pick], mean + 128.0, continuous_scale(index)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    return TrainResult(model, steps, time.monotonic() - start, sample_bits(model, sample, family))
