"""Voxel size and unit of a chunked acquisition volume, from the attributes its writer left.

Zarr v2 keeps them in ``.zattrs``, zarr v3 in ``zarr.json``'s ``attributes``, N5 in
``attributes.json`` (as ``resolution`` or ``pixelResolution``, listed x, y, z). A volume without
them has no voxel size (None): restored images then carry unit scales and no unit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_voxel_size", "voxel_size_from_attributes"]


def voxel_size_from_attributes(
    attributes: dict[str, Any], lists_are_xyz: bool
) -> tuple[tuple[float, float, float] | None, str | None]:
    """(z, y, x) voxel size and unit from store attributes; N5 lists its resolution as (x, y, z)."""
    for key in ("voxel_size", "resolution", "pixelResolution"):
        value = attributes.get(key)
        if isinstance(value, dict):
            dims = value.get("dimensions")
            unit = value.get("unit")
            if isinstance(dims, list) and len(dims) == 3:
                # N5 convention (x, y, z).
                return (float(dims[2]), float(dims[1]), float(dims[0])), unit
        if isinstance(value, list) and len(value) == 3:
            size = tuple(float(v) for v in value)
            if key == "resolution" and lists_are_xyz:
                size = size[::-1]
            return (size[0], size[1], size[2]), attributes.get("units")
    return None, None


def read_voxel_size(layout: str, location: str) -> tuple[tuple[float, float, float] | None, str | None]:
    """(z, y, x) voxel size and unit from a chunked volume's attributes file, or (None, None) without one."""
    root = Path(location)
    candidates = {"zarr": root / ".zattrs", "zarr3": root / "zarr.json", "n5": root / "attributes.json"}
    path = candidates.get(layout)
    if path is None or not path.is_file():
        return None, None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    attributes = document.get("attributes", document) if layout == "zarr3" else document
    return voxel_size_from_attributes(attributes, lists_are_xyz=layout == "n5")
