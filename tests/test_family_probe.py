"""The encoder's choice of distribution family per block."""

from __future__ import annotations

import numpy as np
import pytest

from codec import decompress
from codec.api import encode
from codec.container import unpack
from codec.family_probe import choose_family, family_costs


def _smooth_plus(noise: np.ndarray) -> np.ndarray:
    _slices, h, w = noise.shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    return np.clip(np.rint(base[None] + noise), 0, 255).astype(np.uint8)


def test_gaussian_noise_picks_gaussian_and_laplace_noise_picks_laplace() -> None:
    rng = np.random.default_rng(0)
    shape = (6, 64, 64)
    assert choose_family(_smooth_plus(rng.normal(0, 6, shape))) == "gaussian"
    assert choose_family(_smooth_plus(rng.laplace(0, 5, shape))) == "laplace"


def test_tiny_block_defaults_to_laplace() -> None:
    assert family_costs(np.zeros((1, 2, 2), np.uint8)) == {}
    assert choose_family(np.zeros((1, 2, 2), np.uint8)) == "laplace"


def test_auto_family_is_recorded_and_decodes() -> None:
    rng = np.random.default_rng(1)
    block = _smooth_plus(rng.normal(0, 6, (3, 48, 48)))
    result = encode(block, codec="learned", steps=20)
    assert unpack(result.data).config["engine"]["family"] == "gaussian"
    assert np.array_equal(decompress(result.data), block)


@pytest.mark.parametrize(("which", "family"), [("flyem", "gaussian"), ("isbi", "laplace")])
def test_real_data_family(which: str, family: str, request: pytest.FixtureRequest) -> None:
    """FIB-SEM residuals are Gaussian-shaped, serial-section TEM residuals heavier-tailed."""
    volume = request.getfixturevalue(which)
    assert choose_family(volume[:32, :256, :256]) == family
