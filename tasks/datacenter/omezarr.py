"""A restored volume as an OME-Zarr 0.5 image: a zarr v3 group with the volume and its pyramid.

``<volume>.zarr/zarr.json`` is the group; its ``ome`` attributes (``multiscales`` with axes,
units, scales and translations from the acquisition's voxel size; an ``omero`` display window)
are built and validated by ``ome-zarr-models``; its ``emzip`` attributes keep the acquisition,
source and the pyramid's factors. ``0`` is the full-resolution array (a zstd volume, or an
archive whose chunks are the shipped containers), ``1``, ``2``, ... the levels of
``tasks.datacenter.pyramid``. neuroglancer, napari-ome-zarr, webKnossos and BigDataViewer open it as it is.

Volumes restored before OME-Zarr (a plain array at ``<volume>.zarr``) keep being restored as
they are, without a pyramid (``open_image`` returns None for them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.datacenter.archive import metadata_lock, open_archive
from tasks.datacenter.destination import RestoreError, open_destination
from tasks.datacenter.pyramid import Level, create_or_grow_level, level_plan
from tasks.store.atomic import atomic_write_json

__all__ = [
    "Image",
    "base_array",
    "image_attributes",
    "open_image",
    "read_image",
    "read_metadata",
    "set_completeness",
    "set_window",
]
#: Missing blocks listed by name in an image's attributes (the count is always exact).
MISSING_LISTED = 100

#: Largest ``zarr.json`` read (real ones are a few kB).
MAX_METADATA_BYTES = 1 << 20
#: Unit names OME-Zarr takes (UDUNITS-2), from the short forms acquisitions write.
_UNITS = {
    "nm": "nanometer",
    "um": "micrometer",
    "µm": "micrometer",
    "micron": "micrometer",
    "mm": "millimeter",
    "a": "angstrom",
    "å": "angstrom",
    "pm": "picometer",
}


@dataclass(frozen=True)
class Image:
    """An OME-Zarr image's pyramid: levels (level 0 first), the chunk of every level, the base's kind."""

    path: Path
    levels: list[Level]
    chunk: tuple[int, int, int]
    archive: bool


def base_array(target: Path) -> Path:
    """Where a target's full-resolution array is: ``<target>/0``, or ``target`` itself (before OME-Zarr)."""
    metadata = read_metadata(target / "zarr.json")
    if metadata is not None and metadata.get("node_type") == "array":
        return target
    return target / "0"


def read_metadata(path: Path) -> dict[str, Any] | None:
    """A ``zarr.json`` as a dict (None when absent); too large, unreadable or not an object: ``RestoreError``."""
    if not path.exists():
        return None
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            raise RestoreError(f"{path}: larger than {MAX_METADATA_BYTES} bytes")
        metadata = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise RestoreError(f"{path}: unreadable zarr metadata ({type(exc).__name__}: {exc})") from exc
    if not isinstance(metadata, dict):
        raise RestoreError(f"{path}: zarr metadata is not a JSON object")
    return metadata


def _unit(units: Any) -> str | None:
    if not isinstance(units, str) or not units:
        return None
    return _UNITS.get(units.strip().lower(), units.strip())


def image_attributes(
    name: str,
    levels: list[Level],
    voxel_size: tuple[float, float, float] | None,
    units: Any,
    dtype: np.dtype[Any],
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The group's ``ome`` attributes (OME-Zarr 0.5), built and validated by ``ome-zarr-models``.

    Scales are the voxel size times each level's factor; translations put a level's voxel centre
    at the centre of the level-0 voxels it averages. Without a voxel size, scales count voxels.
    """
    from ome_zarr_models.common.omero import Channel, Omero, Window
    from ome_zarr_models.v05.axes import Axis
    from ome_zarr_models.v05.image import ImageAttrs
    from ome_zarr_models.v05.multiscales import Dataset, Multiscale

    size = voxel_size or (1.0, 1.0, 1.0)
    unit = _unit(units) if voxel_size is not None else None
    axes = tuple(Axis(name=axis, type="space", unit=unit) for axis in "zyx")
    datasets = tuple(
        Dataset.build(
            path=str(i),
            scale=[float(v * f) for v, f in zip(size, level.factor, strict=True)],
            translation=[float(v * (f - 1) / 2) for v, f in zip(size, level.factor, strict=True)],
        )
        for i, level in enumerate(levels)
    )
    multiscale = Multiscale(
        axes=axes,
        datasets=datasets,
        name=name,
        type="mean",
        metadata={"description": "integer mean of the voxels below, rounded half up (emzip tasks.datacenter.pyramid)"},
    )
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    low, high = (float(info.min), float(info.max)) if info is not None else (0.0, 1.0)
    start, end = window if window is not None else (low, high)
    channel = {"color": "FFFFFF", "window": Window(min=low, max=high, start=start, end=end), "label": name}
    omero = Omero.model_validate({"channels": [Channel.model_validate({**channel, "active": True})],
                                  "rdefs": {"model": "greyscale"}})  # fmt: skip
    attrs = ImageAttrs.model_validate({"version": "0.5", "multiscales": [multiscale], "omero": omero})
    return attrs.model_dump(mode="json", by_alias=True, exclude_none=True)


def open_image(
    target: Path,
    kind: str,
    extent: tuple[int, int, int],
    dtype: np.dtype[Any],
    block_shape: tuple[int, int, int],
    attributes: dict[str, Any],
) -> tuple[Image, list[int]] | None:
    """Create or grow the image at ``target``: base array (``kind`` volume or archive), levels, metadata.

    Returns the image and the levels this call added (a new level is computed whole by the next
    pyramid pass), or None for a target restored before OME-Zarr (a plain array, grown as before).
    """
    with metadata_lock(target):
        metadata = read_metadata(target / "zarr.json")
        if metadata is not None and metadata.get("node_type") == "array":
            _open_base(target, kind, extent, dtype, block_shape, attributes)
            return None
        if metadata is not None and metadata.get("node_type") != "group":
            raise RestoreError(f"{target / 'zarr.json'}: neither a zarr group nor an array")
        base = target / "0"
        _open_base(base, kind, extent, dtype, block_shape, attributes)
        base_metadata = read_metadata(base / "zarr.json") or {}
        shape = tuple(int(s) for s in base_metadata.get("shape", extent))
        held = (metadata or {}).get("attributes", {}).get("emzip", {})  # what the image already says wins
        voxel_size = held.get("voxel_size", attributes.get("voxel_size"))
        units = held.get("units", attributes.get("units"))
        voxel = tuple(float(v) for v in voxel_size) if voxel_size else None
        levels = level_plan(shape, block_shape, voxel)  # type: ignore[arg-type]
        before = len(held.get("pyramid", {}).get("factors", []))
        for index, level in enumerate(levels[1:], start=1):
            create_or_grow_level(target / str(index), level.shape, dtype, block_shape)
        window = held.get("window")
        document = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {
                "ome": image_attributes(target.stem, levels, voxel, units, np.dtype(dtype), window),  # type: ignore[arg-type]
                "emzip": {
                    **attributes.get("emzip", {}),
                    **{k: v for k, v in held.items() if k in ("acquisition", "source")},
                    "voxel_size": list(voxel) if voxel else None,
                    "units": units,
                    "pyramid": {"factors": [list(level.factor) for level in levels], "chunk": list(block_shape)},
                    "base": kind,
                    **({"window": window} if window else {}),
                },
            },
        }
        if document != metadata:
            atomic_write_json(target / "zarr.json", document)
        image = Image(target, levels, tuple(block_shape), kind == "archive")  # type: ignore[arg-type]
        # A new image holds no data yet: its blocks' own footprints build its levels. An image that
        # had data and outgrew its top level gets the new levels computed whole.
        return image, list(range(max(before, 1), len(levels))) if metadata is not None else []


def _open_base(
    path: Path,
    kind: str,
    extent: tuple[int, int, int],
    dtype: np.dtype[Any],
    block_shape: tuple[int, int, int],
    attributes: dict[str, Any],
) -> None:
    if kind == "archive":
        open_archive(path, extent, np.dtype(dtype), block_shape, attributes, locked=True)
    else:
        open_destination(path, extent, dtype, block_shape, attributes)


def read_image(target: Path) -> Image | None:
    """The pyramid of the image at ``target`` as its metadata describes it (None: no pyramid)."""
    metadata = read_metadata(target / "zarr.json")
    if metadata is None or metadata.get("node_type") != "group":
        return None
    try:
        held = metadata["attributes"]["emzip"]
        factors = [tuple(int(f) for f in factor) for factor in held["pyramid"]["factors"]]
        chunk = tuple(int(c) for c in held["pyramid"]["chunk"])
        base = read_metadata(target / "0" / "zarr.json") or {}
        shape = tuple(int(s) for s in base["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RestoreError(f"{target / 'zarr.json'}: not an emzip image's metadata ({exc})") from exc
    levels = [Level(f, tuple(-(-s // g) for s, g in zip(shape, f, strict=True))) for f in factors]  # type: ignore[arg-type]
    return Image(target, levels, chunk, held.get("base") == "archive")  # type: ignore[arg-type]


def set_window(image: Image, window: tuple[float, float]) -> None:
    """Set the ``omero`` display window's start and end (the data's range), keeping everything else."""
    target = image.path
    with metadata_lock(target):
        metadata = read_metadata(target / "zarr.json") or {}
        held = metadata["attributes"]["emzip"]
        if held.get("window") == list(window):
            return
        base = read_metadata(target / "0" / "zarr.json") or {}
        voxel = tuple(held["voxel_size"]) if held.get("voxel_size") else None
        dtype = np.dtype(base["data_type"])
        ome = image_attributes(target.stem, image.levels, voxel, held.get("units"), dtype, window)
        atomic_write_json(
            target / "zarr.json", {**metadata, "attributes": {"ome": ome, "emzip": {**held, "window": list(window)}}}
        )


def set_completeness(target: Path, missing: list[str]) -> None:
    """Say in the image's ``emzip`` attributes whether every block of its grid is restored, and which are not.

    ``complete`` false with ``missing_blocks`` (the first ``MISSING_LISTED`` ids) and
    ``missing_count``: a viewer's zeros are then never mistaken for data. Targets from before
    OME-Zarr (a plain array) get the same keys in the array's attributes.
    """
    state = {"complete": not missing, "missing_count": len(missing), "missing_blocks": sorted(missing)[:MISSING_LISTED]}
    with metadata_lock(target):
        metadata = read_metadata(target / "zarr.json")
        if metadata is None:
            return
        attributes = dict(metadata.get("attributes") or {})
        held = dict(attributes.get("emzip") or {})
        if all(held.get(key) == value for key, value in state.items()):
            return
        attributes["emzip"] = {**held, **state}
        atomic_write_json(target / "zarr.json", {**metadata, "attributes": attributes})
