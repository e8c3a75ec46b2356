"""Encoder settings: what a user may choose, with defaults that suit a 64-slice EM block.

Only the encoder reads these; everything the decoder needs is written into the container.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from codec.distributions import FAMILIES
from codec.errors import UnsupportedInputError

#: Training steps per effort level (0: no learned model, classic fallback only). Every level
#: starts from the block's least-squares predictor (or the previous block's model); the
#: default sits where bits against encode seconds flatten (bench/RESULTS.md, effort table).
EFFORT_STEPS = {0: 0, 1: 300, 2: 2000, 3: 4000, 4: 8000}
#: Steps per effort level when the previous block's model is the start (a warm start): the
#: statistics of one acquisition carry from block to block, so the training is paid once.
WARM_EFFORT_STEPS = {0: 0, 1: 0, 2: 0, 3: 200, 4: 1000}
CODEC_CHOICES = ("auto", "learned", "jpegxl", "lzma")


@dataclass(frozen=True)
class Settings:
    """How to compress a block.

    width: hidden units of the model's two layers (8..64, a multiple of 8). stripes: row bands
    coded as independent streams (a block decodes on that many threads; each stripe's first rows
    see no row above). family: per-voxel distribution ("laplace", "gaussian", or "auto": chosen
    per block by a least-squares probe, see codec.family_probe).
    effort: training budget level 0-4 (see EFFORT_STEPS, WARM_EFFORT_STEPS); steps overrides both.
    device: where training runs, "auto" (CUDA when present), "cpu" or "cuda[:N]" (the coded
    bytes do not depend on it being reproducible: the frozen integer model is what is stored).
    seed: training seed.
    codec: "auto" (learned unless a classic codec is smaller or the input is unsupported),
    "learned" (whatever its size; still falls back when training or verification fails),
    "jpegxl" or "lzma" (classic only).
    fallback_effort: JPEG-XL effort of the classic path. verify: decode in-process and compare
    before returning (the pipeline verifies again in another process).
    """

    width: int = 16
    stripes: int = 2
    family: str = "auto"
    effort: int = 2
    steps: int | None = None
    device: str = "auto"
    seed: int = 0
    codec: str = "auto"
    fallback_effort: int = 7
    verify: bool = True

    def training_steps(self, warm: bool = False) -> int:
        """Number of training steps this setting asks for (``warm``: starting from the previous block)."""
        if self.steps is not None:
            return self.steps
        return (WARM_EFFORT_STEPS if warm else EFFORT_STEPS)[self.effort]

    def validated(self) -> Settings:
        """Return self, or raise UnsupportedInputError naming the first bad field."""
        checks = [
            (8 <= self.width <= 64 and self.width % 8 == 0, "width must be 8..64, a multiple of 8"),
            (1 <= self.stripes <= 64, "stripes must be 1..64"),
            (self.family in (*FAMILIES, "auto"), f"family must be one of {(*FAMILIES, 'auto')}"),
            (self.effort in EFFORT_STEPS, f"effort must be one of {sorted(EFFORT_STEPS)}"),
            (self.steps is None or self.steps >= 0, "steps must be >= 0"),
            (self.codec in CODEC_CHOICES, f"codec must be one of {CODEC_CHOICES}"),
            (1 <= self.fallback_effort <= 10, "fallback_effort must be 1..10"),
        ]
        for ok, message in checks:
            if not ok:
                raise UnsupportedInputError(f"invalid setting: {message}")
        return self

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied; unknown names are an error, not ignored."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UnsupportedInputError(f"unknown setting(s): {', '.join(unknown)}")
        return replace(self, **overrides).validated()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
