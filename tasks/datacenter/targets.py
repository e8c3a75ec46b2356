"""What an existing restored target holds, and whether a received block may be written into it.

A restored volume (zstd zarr v3) and an archive (emzip-coded zarr v3) both keep their dtype,
block grid, shape and the acquisition they restore in ``zarr.json``. Before any block is written
the data center compares its record with that: another dtype, another grid or another
acquisition is refused for that block alone, with the reason; the target is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.datacenter.destination import RestoreError
from tasks.datacenter.omezarr import base_array, read_metadata
from tasks.source.grid import grids_agree
from tasks.store.validation import ValidBlock

__all__ = ["TargetError", "TargetInfo", "disagreement", "read_target", "target_attributes_acquisition"]


class TargetError(Exception):
    """An existing target's metadata cannot be read; the message names the file."""


@dataclass(frozen=True)
class TargetInfo:
    """An existing target's dtype (numpy name), block grid, shape and acquisition id (if recorded)."""

    dtype: str
    grid: tuple[int, ...]
    shape: tuple[int, ...]
    acquisition: str | None


def target_attributes_acquisition(attributes: Any) -> str | None:
    """The acquisition id kept in a target's attributes (``emzip.acquisition``), or None."""
    emzip = attributes.get("emzip") if isinstance(attributes, dict) else None
    value = emzip.get("acquisition") if isinstance(emzip, dict) else None
    return value if isinstance(value, str) else None


def read_target(path: Path) -> TargetInfo | None:
    """The target at ``path`` (a ``.zarr`` folder), or None when there is none yet.

    An OME-Zarr image (``tasks.datacenter.omezarr``) is described by its full-resolution array ``0``, whose
    attributes keep the acquisition as a plain array's do; a target restored before OME-Zarr is
    that array itself.
    """
    try:
        metadata_path = base_array(path) / "zarr.json"
        metadata = read_metadata(metadata_path)
    except RestoreError as exc:
        raise TargetError(str(exc)) from exc
    if metadata is None:
        return None
    try:
        grid = metadata["chunk_grid"]["configuration"]["chunk_shape"]
        return TargetInfo(
            dtype=np.dtype(metadata["data_type"]).name,
            grid=tuple(int(g) for g in grid),
            shape=tuple(int(s) for s in metadata["shape"]),
            acquisition=target_attributes_acquisition(metadata.get("attributes")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise TargetError(f"{metadata_path}: not a restored volume's metadata ({type(exc).__name__}: {exc})") from exc


def disagreement(target: TargetInfo, valid: ValidBlock) -> str | None:
    """Why the block may not go into ``target`` (None when it may).

    A target from before acquisition ids (none recorded) takes blocks of any acquisition; a
    record without one (from before acquisition ids) goes only into such a target.
    """
    if target.dtype != valid.dtype.name:
        return f"target holds {target.dtype}, the block is {valid.dtype.name}"
    if not grids_agree(target.grid, tuple(valid.block_shape), target.shape):
        return f"target's block grid is {list(target.grid)}, the record's {list(valid.block_shape)}"
    if target.acquisition is not None and valid.acquisition != target.acquisition:
        return (
            f"target restores acquisition {target.acquisition[:12]}, the block comes from "
            f"{(valid.acquisition or 'an unidentified acquisition')[:12]}"
        )
    return None
