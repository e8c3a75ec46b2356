"""Voxel size and unit of a chunked acquisition volume, from the attributes its writer left.

Zarr v2 keeps them in ``.zattrs``, zarr v3 in ``zarr.json``'s ``attributes``, N5 in
``attributes.json`` (as ``resolution`` or ``pixelResolution``, listed x, y, z). An array of an
OME-Zarr image (``<group>/0``) takes its dataset's scale and the axes' units from the group's
``multiscales``. A volume without them has no voxel size (None) unless the operator gives one
(``--voxel-size``, ``--unit``): restored images then carry unit scales and no unit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["ome_dataset_paths", "ome_multiscale", "ome_voxel_size", "read_voxel_size", "voxel_size_from_attributes"]


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
    found = voxel_size_from_attributes(attributes if isinstance(attributes, dict) else {}, lists_are_xyz=layout == "n5")
    if found[0] is None and layout in ("zarr", "zarr3"):
        multiscale = ome_multiscale(root.parent)  # an array of an OME-Zarr image: the group says
        if multiscale is not None and root.name in ome_dataset_paths(multiscale):
            return ome_voxel_size(multiscale, root.name)
    return found


def ome_multiscale(folder: Path) -> dict[str, Any] | None:
    """The first ``multiscales`` entry of an OME-Zarr group at ``folder`` (0.5 in ``zarr.json``'s
    ``attributes.ome``, 0.4 in ``.zattrs``), or None when ``folder`` is not such a group."""
    candidates = ((folder / "zarr.json", ("attributes", "ome")), (folder / ".zattrs", ()))
    for path, keys in candidates:
        if not path.is_file():
            continue
        try:
            document: Any = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if path.name == "zarr.json" and document.get("node_type") != "group":
            return None
        for key in keys:
            document = document.get(key) if isinstance(document, dict) else None
        multiscales = document.get("multiscales") if isinstance(document, dict) else None
        if isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict):
            return multiscales[0]
    return None


def ome_dataset_paths(multiscale: dict[str, Any]) -> list[str]:
    """The arrays of an OME-Zarr multiscale, full resolution first."""
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list):
        return []
    return [d["path"] for d in datasets if isinstance(d, dict) and isinstance(d.get("path"), str)]


def ome_voxel_size(multiscale: dict[str, Any], dataset: str) -> tuple[tuple[float, float, float] | None, str | None]:
    """(z, y, x) voxel size and unit of one dataset of an OME-Zarr multiscale, from its scale and
    the ``axes`` (names and units); (None, None) when it does not say (or is not z, y, x)."""
    axes = multiscale.get("axes")
    names = [a.get("name") if isinstance(a, dict) else a for a in axes] if isinstance(axes, list) else ["z", "y", "x"]
    for entry in multiscale.get("datasets") or []:
        if not isinstance(entry, dict) or entry.get("path") != dataset:
            continue
        scale = next(
            (
                t.get("scale")
                for t in entry.get("coordinateTransformations") or []
                if isinstance(t, dict) and t.get("type") == "scale"
            ),
            None,
        )
        if not isinstance(scale, list) or len(scale) != len(names) or not all(n in names for n in "zyx"):
            return None, None
        try:
            size = tuple(float(scale[names.index(axis)]) for axis in "zyx")
        except (TypeError, ValueError):
            return None, None
        units = (
            [a.get("unit") for a in axes if isinstance(a, dict) and a.get("name") in ("z", "y", "x")]
            if isinstance(axes, list)
            else []
        )
        unit = next((u for u in units if isinstance(u, str) and u), None)
        return (size[0], size[1], size[2]), unit
    return None, None
