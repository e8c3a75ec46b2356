"""``emzip view``: how a person opens a restored volume or an archive in neuroglancer, napari or Python.

By default it prints what to type: the neuroglancer source, the napari command, the zarr call.
``--serve`` serves the image over HTTP (``flows.view_server``: Range, HEAD and CORS from
Starlette under uvicorn; an archive's emzip-coded level 0 decoded on request and served as plain
zstd), so a browser on this machine or the facility's network opens
``zarr3://http://HOST:PORT/<volume>.zarr/`` at full resolution, and so do TensorStore,
ome-zarr-py and zarr-python over HTTP, none of them with emzip installed.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

from tasks.datacenter.omezarr import read_image, read_metadata

__all__ = ["NEUROGLANCER", "ViewError", "describe", "neuroglancer_link", "neuroglancer_state"]

#: A public neuroglancer client; any other (a facility's own) takes the same URL fragment.
NEUROGLANCER = "https://neuroglancer-demo.appspot.com/"

#: Metres per unit, for neuroglancer's coordinate space (OME-Zarr units are UDUNITS-2 names).
_METRES = {
    "meter": 1.0,
    "millimeter": 1e-3,
    "micrometer": 1e-6,
    "nanometer": 1e-9,
    "angstrom": 1e-10,
    "picometer": 1e-12,
}


class ViewError(Exception):
    """The path is not a restored volume that can be viewed; the message names it."""


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def describe(path: Path, url: str | None = None) -> list[str]:
    """Lines that tell a person what ``path`` holds and how to open it (``url``: where it is served)."""
    metadata_path = path / "zarr.json"
    if not metadata_path.is_file():
        raise ViewError(f"{path}: no zarr.json here: not a restored volume")
    image = read_image(path)
    source = f"zarr3://{url}" if url else f"zarr3://file://{path.resolve()}/"
    lines = []
    if image is None:
        lines.append(f"{path}: a zarr v3 array (restored before OME-Zarr: no pyramid)")
    else:
        base = json.loads((path / "0" / "zarr.json").read_text())
        shapes = ", ".join("x".join(str(s) for s in level.shape) for level in image.levels)
        lines.append(
            f"{path}: OME-Zarr 0.5 image, {base['data_type']}, {_plural(len(image.levels), 'level')} ({shapes})"
        )
        if image.archive:
            lines.append(
                "level 0 is an emzip archive (its chunks are emzip containers): `emzip view --serve` serves it "
                "to every viewer as plain zstd, decoded on request; from disk, zarr-python with emzip installed "
                "reads it"
            )
    lines.append(f"neuroglancer source: {source}")
    if url:
        lines.append(f"neuroglancer: {neuroglancer_link(url, path.stem, path)}")
    else:
        lines.append(f"  (a browser cannot read file:// paths: `emzip view {path} --serve` serves it over HTTP)")
    lines.append(f"napari: napari --plugin napari-ome-zarr {path}")
    lines.append(f"python: zarr.open_group({str(path)!r}, mode='r')['0']")
    return lines


def neuroglancer_state(url: str, name: str, image: Path | None = None) -> dict[str, Any]:
    """A neuroglancer state with one image layer reading ``url``, showing the EM section.

    The global dimensions are listed x, y, z: neuroglancer's ``xy`` panel shows its first two
    display dimensions, so the section (x across, y down) is on screen and z scrolls. Their
    scales are the image's level-0 voxel size where the metadata has one.
    """
    scale = {"z": (1.0, ""), "y": (1.0, ""), "x": (1.0, "")}
    metadata = read_metadata(image / "zarr.json") if image is not None else None
    try:
        multiscale = metadata["attributes"]["ome"]["multiscales"][0]  # type: ignore[index]
        axes = [axis["name"] for axis in multiscale["axes"]]
        units = [axis.get("unit") for axis in multiscale["axes"]]
        sizes = next(t["scale"] for t in multiscale["datasets"][0]["coordinateTransformations"] if t["type"] == "scale")
        for axis, unit, size in zip(axes, units, sizes, strict=True):
            if axis in scale:
                metres = _METRES.get(unit) if isinstance(unit, str) else None
                scale[axis] = (float(size) * metres, "m") if metres else (float(size), "")
    except (KeyError, IndexError, TypeError, StopIteration, ValueError):
        pass  # no OME metadata (a volume from before OME-Zarr): voxel units
    dimensions = {axis: [scale[axis][0], scale[axis][1]] for axis in ("x", "y", "z")}
    return {
        "dimensions": dimensions,
        "layers": [{"type": "image", "source": f"zarr3://{url}", "name": name}],
        "layout": "xy",
    }


def neuroglancer_link(url: str, name: str, image: Path | None = None) -> str:
    """A neuroglancer URL whose state (``neuroglancer_state``) shows the image served at ``url``."""
    state = neuroglancer_state(url, name, image)
    return NEUROGLANCER + "#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")))
