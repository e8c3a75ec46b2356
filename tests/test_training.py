"""Training starts from the block's least-squares predictor and never returns anything worse."""

from __future__ import annotations

import numpy as np
import torch

from codec import lattice
from codec.model import Architecture
from codec.network import LatticeModel
from codec.train import TrainBudget, _mean_bits, _Sampler, least_squares_start, model_stack, train_model


def _validation_bits(model: LatticeModel, block: np.ndarray) -> float:
    sampler = _Sampler(block, model.arch.k, 32, torch.device("cpu"), seed=5)
    with torch.no_grad():
        return float(np.mean([float(_mean_bits(model, *sampler.batch(4))) for _ in range(3)]))


def test_least_squares_start_is_far_better_than_random_weights(em_block: np.ndarray) -> None:
    arch = Architecture(family="gaussian")
    torch.manual_seed(0)
    random_model = LatticeModel(arch)
    torch.manual_seed(0)
    started = LatticeModel(arch)
    least_squares_start(started, em_block, torch.device("cpu"))
    assert _validation_bits(started, em_block) < _validation_bits(random_model, em_block) - 0.5


def test_least_squares_start_predicts_a_linear_ramp_exactly() -> None:
    """On a volume that is a linear ramp, every group's start predicts inner voxels exactly."""
    z, y, x = np.mgrid[0:3, 0:40, 0:40]
    ramp = (x + y + 10 * z).astype(np.uint8)
    model = LatticeModel(Architecture(family="laplace"))
    least_squares_start(model, ramp, torch.device("cpu"))
    inner = torch.zeros((40, 40), dtype=torch.bool)
    inner[lattice.PAD : -lattice.PAD, lattice.PAD : -lattice.PAD] = True  # every neighbour inside
    truth = torch.as_tensor(ramp, dtype=torch.float32)
    with torch.no_grad():
        for g, (means, scale_index) in enumerate(model(model_stack(ramp, model.arch.k, torch.device("cpu")))):
            keep = lattice.gather(inner, g)
            expected = lattice.gather(truth, g)
            assert torch.max(torch.abs(means[1:, keep] - expected[1:, keep])) < 0.05, g
            assert torch.all(scale_index[1:, keep] < 1.0), g  # the smallest scale: nothing left to code


def test_training_keeps_the_best_validated_weights(em_block: np.ndarray) -> None:
    arch = Architecture(family="gaussian")
    _, start = train_model(em_block, arch, TrainBudget(steps=0), torch.device("cpu"), seed=1)
    _, trained = train_model(em_block, arch, TrainBudget(steps=40, eval_every=10), torch.device("cpu"), seed=1)
    assert trained.validation_bits <= start.validation_bits
