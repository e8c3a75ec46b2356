"""The block grid: how a volume is cut into blocks, and their stable, human-readable ids.

A block id is ``<volume>/z0064_y0512_x0000``: the volume name and the block's start voxel, so it
never changes when the volume grows and a person can read where the block lives. Blocks at the
far edges are smaller than the block shape; they are kept, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tasks.source.volumes import Bounds

DEFAULT_DEPTH = 64
DEFAULT_TILE = 512
_ID_PATTERN = re.compile(r"^(?P<volume>.+)/z(?P<z>\d{4,})_y(?P<y>\d{4,})_x(?P<x>\d{4,})$")

__all__ = ["BlockRef", "block_grid", "choose_block_shape", "grids_agree", "parse_block_id", "versioned_stem"]


@dataclass(frozen=True, order=True)
class BlockRef:
    """One block of one volume: its id and its half-open (z, y, x) bounds."""

    volume: str
    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def block_id(self) -> str:
        """``<volume>/z0064_y0512_x0000``."""
        return f"{self.volume}/z{self.z0:04d}_y{self.y0:04d}_x{self.x0:04d}"

    @property
    def bounds(self) -> Bounds:
        """((z0, z1), (y0, y1), (x0, x1))."""
        return (self.z0, self.z1), (self.y0, self.y1), (self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxels per axis."""
        return self.z1 - self.z0, self.y1 - self.y0, self.x1 - self.x0

    @property
    def voxels(self) -> int:
        """Number of voxels in the block."""
        depth, height, width = self.shape
        return depth * height * width

    @property
    def file_stem(self) -> str:
        """The block's file name stem inside its volume's folder (``z0064_y0512_x0000``)."""
        return self.block_id.rsplit("/", 1)[1]

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form (for the ledger and provenance)."""
        return {"volume": self.volume, "id": self.block_id, "bounds": [list(b) for b in self.bounds]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockRef:
        """Inverse of ``as_json``."""
        (z0, z1), (y0, y1), (x0, x1) = data["bounds"]
        return cls(data["volume"], z0, z1, y0, y1, x0, x1)


def versioned_stem(block: BlockRef, version: int = 1) -> str:
    """A block version's file name stem: ``z0064_y0512_x0000`` for version 1, ``z0064_y0512_x0000.v2`` after.

    Each version has files of its own, so coding a block again never overwrites the copy that was
    shipped (and may not yet be restored) under the old version's names.
    """
    if version < 1:
        raise ValueError(f"{block.block_id}: block version must be at least 1, got {version}")
    return block.file_stem if version == 1 else f"{block.file_stem}.v{version}"


def parse_block_id(block_id: str) -> tuple[str, int, int, int]:
    """Split a block id into (volume, z0, y0, x0); raises ValueError for a malformed id."""
    match = _ID_PATTERN.match(block_id)
    if match is None:
        raise ValueError(f"malformed block id {block_id!r} (expected <volume>/z0000_y0000_x0000)")
    return match["volume"], int(match["z"]), int(match["y"]), int(match["x"])


def choose_block_shape(
    chunk: tuple[int, int, int],
    depth: int = DEFAULT_DEPTH,
    tile: int = DEFAULT_TILE,
    whole_slices: bool = False,
    shape: tuple[int, int, int] | None = None,
    clip_depth: bool = False,
) -> tuple[int, int, int]:
    """Default block shape: ``depth`` slices, y and x the multiple of the storage chunk nearest ``tile``.

    For slice-image folders (``whole_slices``) the chunk is a whole slice; the tile is then used
    as is so that large slices are cut into trainable blocks. With the volume's ``shape``, y and
    x never exceed the slice (a block, and so the data center's chunk, is never larger than the
    image where a smaller one serves); z only with ``clip_depth``, for a source that does not
    grow (an acquisition grows in z, and its grid must stay the same from run to run).
    """
    if whole_slices:
        sizes = [tile, tile]
    else:
        sizes = [c * max(1, round(tile / c)) for c in chunk[1:]]
    if shape is not None:
        # An extent of 0 (a slice folder with no settled slice yet) says nothing about the slice.
        sizes = [min(size, extent) if extent > 0 else size for size, extent in zip(sizes, shape[1:], strict=True)]
        if clip_depth:
            depth = max(1, min(depth, shape[0]))
    return depth, sizes[0], sizes[1]


def grids_agree(held: tuple[int, ...], grid: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether two block grids cut a volume of ``shape`` into the same blocks.

    Equal on every axis, or, in y and x (which do not grow), both at least the volume's extent:
    a target made with a 512-wide grid before grids were clipped to the slice (250 wide) takes
    the blocks of the clipped grid, the same single column of chunks. Without the volume's shape
    (a target not created yet), only equal grids agree.
    """
    if len(held) != len(grid):
        return False
    if len(shape) != len(grid):
        return tuple(held) == tuple(grid)
    return all(
        h == g or (axis > 0 and h >= extent and g >= extent)
        for axis, (h, g, extent) in enumerate(zip(held, grid, shape, strict=True))
    )


def block_grid(volume: str, shape: tuple[int, int, int], block_shape: tuple[int, int, int]) -> Iterator[BlockRef]:
    """All blocks covering ``shape`` in (z, y, x) order, edge blocks clipped to the volume."""
    if any(b <= 0 for b in block_shape):
        raise ValueError(f"block shape must be positive, got {block_shape}")
    depth, height, width = shape
    bz, by, bx = block_shape
    for z0 in range(0, depth, bz):
        for y0 in range(0, height, by):
            for x0 in range(0, width, bx):
                yield BlockRef(volume, z0, min(z0 + bz, depth), y0, min(y0 + by, height), x0, min(x0 + bx, width))
