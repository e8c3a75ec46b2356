"""An acquisition's model: decided once, on one block, then used to code the next blocks as they are.

A warm block's encode used to spend about 70% of its time deciding again what the previous block
had decided: the distribution family (``codec.family_probe``), the least-squares start, whether
the previous block's model beats it, and freezing (bench/RESULTS.md, issue 36). The blocks of one
acquisition share their content, so the edge decides on the acquisition's first block and codes
every next block with that frozen model directly: a block then costs the engine's coding and the
classic probe it is judged against.

Whether the shared model still fits is checked on every block, with what the encode computes
anyway: the learned container's size against the classic probe's estimate for the same block
(JPEG-XL e3 on a few slices, ``codec.api._classic_estimate``). The ratio on the deciding block is
kept with the model. A block whose ratio is worse by more than ``REFIT_TOLERANCE`` (the content
changed: resin, a new region), or whose container is not smaller than the estimate, is decided
again, warm-started from the shared model, and the result says why (``EncodeResult.reason``, in
the block's provenance). The check costs nothing beyond the probe, and a re-decision costs one
warm block's full encode.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["REFIT_TOLERANCE", "SharedModel"]

#: How much worse (relative) a block's learned/probe ratio may be than the deciding block's
#: before the block is decided again. Block-to-block spread within one EM volume is about 1%.
REFIT_TOLERANCE = 0.03


@dataclass(frozen=True, eq=False)
class SharedModel:
    """The decisions of one block, reusable by every block of the same acquisition.

    ``family`` and ``state`` (the trained float weights, frozen again with each block's own
    calibration) are what the blocks share; ``probe_ratio`` is the deciding block's learned
    bytes over its classic estimate, the yardstick of ``fits``.
    """

    family: str
    state: dict[str, torch.Tensor] = field(repr=False)
    probe_ratio: float
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Tells one decision from another across processes (the model travels pickled to workers)."""

    def fits(self, ratio: float, margin: float) -> bool:
        """Whether a block coded at ``ratio`` (learned / classic estimate) keeps this model: below the
        codec's probe ``margin`` and within ``REFIT_TOLERANCE`` of the deciding block's ratio."""
        return ratio < margin and ratio <= self.probe_ratio * (1.0 + REFIT_TOLERANCE)
