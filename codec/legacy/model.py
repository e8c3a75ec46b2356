"""The architecture of a context model: its shape, stored in every learned container.

Format v3 builds :class:`codec.legacy.network.LatticeModel` (training) and
:class:`codec.legacy.frozen.FrozenModel` (coding) from it; v1/v2 containers describe their
:class:`codec.legacy.quantize.IntegerModel` with the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """The shape of a context model; stored in every container that uses one."""

    k: int = 2
    trunk_channels: int = 16
    trunk_layers: int = 3
    head_hidden: int = 16
    family: str = "laplace"

    def to_json(self) -> dict[str, object]:
        return {
            "k": self.k,
            "trunk_channels": self.trunk_channels,
            "trunk_layers": self.trunk_layers,
            "head_hidden": self.head_hidden,
            "family": self.family,
        }
