"""Deterministic EM-like volumes (membranes, organelles, slow drift, noise) for demos and tests."""

from __future__ import annotations

import numpy as np


def em_like(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A uint8 (z, y, x) volume with cell-like membranes that drift slowly between slices."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    n_cells = max(4, (h * w) // 600)
    centres = rng.uniform(0, 1, (n_cells, 2)) * [h, w]
    drift = rng.normal(0, 0.4, (n_cells, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty(shape, np.uint8)
    for i in range(z):
        pts = centres + drift * i
        d = np.sqrt((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2)
        d.sort(axis=-1)
        edge = d[..., 1] - d[..., 0]  # small near the boundary between two cells
        membrane = np.exp(-(edge**2) / 6.0)
        organelle = (d[..., 0] < 3.5).astype(np.float64)
        image = 170 - 110 * membrane - 60 * organelle + rng.normal(0, 7, (h, w))
        out[i] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out
