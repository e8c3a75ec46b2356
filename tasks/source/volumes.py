"""Open acquisition volumes through TensorStore, whatever layout the microscope wrote.

Supported layouts (``Layout``):

- ``zarr`` (v2), ``zarr3`` (sharded or not), ``n5``, ``precomputed`` (neuroglancer, unsharded
  chunks for per-chunk readiness): a chunked array in a folder or any TensorStore kvstore;
- ``slices``: a folder of 2-D slice images (TIFF or PNG), the z index being the last number in
  each file name (``slice_0042.tif``), read with TensorStore's image drivers as a virtual stack.

Every volume is presented as (z, y, x) regardless of how it is stored (precomputed stores x, y, z,
channel). Volumes are re-opened for every scan so a growing acquisition is seen with fresh
metadata, never through a stale handle. All opens share one ``tensorstore.Context`` (see
``shared_context``) so cache memory and I/O concurrency stay bounded however many blocks are read.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import tensorstore as ts

from tasks.source.identity import Acquisition, AcquisitionError, acquisition_of, default_volume_id
from tasks.source.voxel_size import ome_dataset_paths, ome_multiscale, read_voxel_size
from tasks.store.names import UnsafeInputError, check_volume_name

Layout = Literal["zarr", "zarr3", "n5", "precomputed", "slices"]
CHUNKED_DRIVERS: dict[str, Layout] = {
    "zarr": "zarr",
    "zarr3": "zarr3",
    "n5": "n5",
    "neuroglancer_precomputed": "precomputed",
}
IMAGE_SUFFIXES = {".tif": "tiff", ".tiff": "tiff", ".png": "png"}
_Z_NUMBER = re.compile(r"(\d+)(?!.*\d)")

__all__ = [
    "Bounds",
    "Volume",
    "VolumeError",
    "VolumeSource",
    "open_volume",
    "portable_source",
    "resolve_source",
    "shared_context",
]


_SPEC_NOISE = re.compile(r"\s*\[(?:tensorstore_spec|source locations)='.*?'\]", re.DOTALL)


def short_error(exc: BaseException) -> str:
    """TensorStore's message without the whole spec and source locations it appends (hundreds of characters)."""
    return _SPEC_NOISE.sub("", str(exc)).strip()


class VolumeError(Exception):
    """An acquisition volume cannot be opened or read; the message names the location and why."""


Bounds = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""Half-open (start, stop) per axis in (z, y, x) order."""


def shared_context(cache_bytes: int = 256 << 20, io_concurrency: int = 8, copy_concurrency: int = 2) -> ts.Context:
    """One TensorStore context for a process: bounded chunk cache and I/O and copy concurrency."""
    return ts.Context(
        {
            "cache_pool": {"total_bytes_limit": int(cache_bytes)},
            "file_io_concurrency": {"limit": int(io_concurrency)},
            "data_copy_concurrency": {"limit": int(copy_concurrency)},
        }
    )


@dataclass(frozen=True)
class VolumeSource:
    """Where an acquisition volume lives and how it is laid out.

    ``location`` is a local path (for ``slices`` always a folder); ``spec`` is a TensorStore JSON
    spec for chunked layouts when the volume lives elsewhere or needs options (it wins over
    ``location``). ``name`` is the volume id, the first part of every block id: unique to the
    acquisition (``tasks.source.identity``) unless an operator chose it. ``acquisition`` is the
    acquisition's identity (None only for a source opened without one, for a benchmark).
    """

    name: str
    layout: Layout
    location: str
    spec: dict[str, Any] | None = None
    acquisition: Acquisition | None = None
    voxel_size: tuple[float, float, float] | None = None
    """The operator's voxel size (z, y, x); None: what the store records, if anything."""
    units: str | None = None
    """The operator's unit of ``voxel_size``."""

    def as_json(self) -> dict[str, Any]:
        """A JSON-safe description for provenance records and flow parameters."""
        described: dict[str, Any] = {
            "name": self.name,
            "layout": self.layout,
            "location": self.location,
            "spec": self.spec,
            "acquisition": self.acquisition.as_json() if self.acquisition else None,
        }
        if self.voxel_size is not None:
            described["voxel_size"] = list(self.voxel_size)
            described["units"] = self.units
        return described

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeSource:
        """Inverse of ``as_json``."""
        raw = data.get("acquisition")
        acquisition = Acquisition(raw["id"], raw["origin"], raw["location"]) if isinstance(raw, dict) else None
        size = data.get("voxel_size")
        return cls(
            name=data["name"],
            layout=data["layout"],
            location=data["location"],
            spec=data.get("spec"),
            acquisition=acquisition,
            voxel_size=(float(size[0]), float(size[1]), float(size[2])) if size else None,
            units=data.get("units") if size else None,
        )


def portable_source(described: Any) -> Any:
    """A source description (``VolumeSource.as_json``) fit for an image's attributes: no absolute paths.

    Images are published and copied to other sites; the edge's directory layout means nothing
    there and should not leak. Locations keep their last part (the acquisition folder's name), a
    TensorStore spec only its driver; the acquisition id, which identifies the data, is kept.
    """
    if not isinstance(described, dict):
        return described
    out = dict(described)
    if isinstance(out.get("location"), str):
        out["location"] = PurePath(out["location"].rstrip("/")).name
    if isinstance(out.get("spec"), dict):
        out["spec"] = {"driver": out["spec"].get("driver")}
    acquisition = out.get("acquisition")
    if isinstance(acquisition, dict) and isinstance(acquisition.get("location"), str):
        out["acquisition"] = {**acquisition, "location": PurePath(acquisition["location"].rstrip("/")).name}
    return out


def _ome_base(path: Path) -> tuple[Path, Layout] | None:
    """An OME-Zarr image's full-resolution array and its layout; None when ``path`` is not an image."""
    multiscale = ome_multiscale(path)
    if multiscale is None:
        return None
    datasets = ome_dataset_paths(multiscale)
    if not datasets:
        raise VolumeError(f"{path}: an OME-Zarr group whose multiscales lists no datasets")
    base = path / datasets[0]
    if not base.is_dir() or not ((base / "zarr.json").is_file() or (base / ".zarray").is_file()):
        raise VolumeError(f"{path}: OME-Zarr dataset {datasets[0]!r} is not an array here")
    return base, "zarr3" if (base / "zarr.json").is_file() else "zarr"


def _detect_layout(path: Path) -> Layout:
    if (path / ".zarray").is_file():
        return "zarr"
    if (path / "zarr.json").is_file():
        return "zarr3"
    if (path / "info").is_file():
        return "precomputed"
    attributes = path / "attributes.json"
    if attributes.is_file():
        try:
            if "dimensions" in json.loads(attributes.read_text()):
                return "n5"
        except (OSError, ValueError) as exc:
            raise VolumeError(f"{attributes}: unreadable N5 attributes ({exc})") from exc
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()):
        return "slices"
    raise VolumeError(
        f"{path}: not a recognised acquisition volume (no .zarray, zarr.json, attributes.json, info, "
        "or TIFF/PNG slice files)"
    )


def resolve_source(
    target: str | os.PathLike[str] | dict[str, Any],
    name: str | None = None,
    layout: Layout | None = None,
    *,
    identify: bool = True,
    write_id: bool = True,
    voxel_size: tuple[float, float, float] | None = None,
    units: str | None = None,
) -> VolumeSource:
    """Turn a path, a JSON spec string, or a spec dict into a ``VolumeSource``.

    The volume id is ``name`` when given (an operator's choice, used as is); otherwise the folder
    name without its suffix plus the acquisition's id (``run42.zarr`` -> ``run42-3f9a2c1b04``),
    so two acquisitions in folders of the same name never share block ids (``tasks.source.identity``;
    this writes the acquisition's id file on first sight). ``identify=False`` (benchmarks, a
    look at whether a folder is a volume) skips the identity and names the volume after the
    folder; ``write_id=False`` never writes into the source (the id is read or derived). The
    layout is detected from the folder's contents unless given. An OME-Zarr image (a group with
    ``multiscales``) is read from its full-resolution array, under the image's name.
    ``voxel_size`` and ``units``: the operator's, for a source that records none (they win over
    what it records).
    """
    if voxel_size is not None and (len(voxel_size) != 3 or min(voxel_size) <= 0):
        raise VolumeError(f"voxel size must be three positive numbers z,y,x, got {list(voxel_size)}")
    source = _resolve(target, name, layout, identify, write_id)
    if voxel_size is None:
        return source
    return replace(source, voxel_size=tuple(float(v) for v in voxel_size), units=units or "nanometer")  # type: ignore[arg-type]


def _resolve(
    target: str | os.PathLike[str] | dict[str, Any],
    name: str | None,
    layout: Layout | None,
    identify: bool,
    write_id: bool,
) -> VolumeSource:
    if isinstance(target, dict) or (isinstance(target, str) and target.lstrip().startswith("{")):
        try:
            spec = json.loads(target) if isinstance(target, str) else dict(target)
        except (ValueError, RecursionError) as exc:
            raise VolumeError(f"the TensorStore spec is not valid JSON: {exc}") from exc
        if not isinstance(spec, dict):
            raise VolumeError("the TensorStore spec is not a JSON object")
        driver = spec.get("driver")
        if driver not in CHUNKED_DRIVERS:
            raise VolumeError(f"TensorStore spec driver {driver!r} is not one of {sorted(CHUNKED_DRIVERS)}")
        kvstore = spec.get("kvstore", "")
        location = kvstore if isinstance(kvstore, str) else str(kvstore.get("path", ""))
        location = location.removeprefix("file://")
        default_name = Path(location.rstrip("/")).stem or "volume"
        acquisition = _identify(location, spec, write_id) if identify else None
        return VolumeSource(
            _volume_id(name, default_name, acquisition, location), CHUNKED_DRIVERS[driver], location, spec, acquisition
        )
    path = Path(target)
    if path.is_file():
        raise VolumeError(
            f"{path}: a file ({path.suffix or 'no suffix'}) is not a volume this reads: give a zarr, zarr3, N5 or "
            "precomputed folder, a folder of TIFF/PNG slices, or a TensorStore spec (`emzip compress` codes a "
            ".npy or TIFF stack into one container)"
        )
    if layout is None and not path.is_dir():
        raise VolumeError(f"{path}: acquisition volume folder does not exist")
    stem = path.resolve().stem if path.name in ("", ".", "..") else path.stem
    if layout is None:
        path, layout = _ome_base(path) or (path, _detect_layout(path))
    acquisition = _identify(str(path), None, write_id) if identify else None
    return VolumeSource(_volume_id(name, stem, acquisition, str(path)), layout, str(path.resolve()), None, acquisition)


def _identify(location: str, spec: dict[str, Any] | None, write: bool) -> Acquisition:
    try:
        return acquisition_of(location, spec, write=write)
    except (AcquisitionError, OSError) as exc:
        raise VolumeError(f"{location}: cannot identify the acquisition: {exc}") from exc


def _volume_id(name: str | None, stem: str, acquisition: Acquisition | None, where: str) -> str:
    """An operator's ``name`` as is; else the folder's stem, with the acquisition id when known."""
    if name is not None:
        return _safe_name(name, where)
    stem = _safe_name(stem, where)
    return default_volume_id(stem, acquisition) if acquisition is not None else stem


def _safe_name(name: str, where: str) -> str:
    """The volume name becomes a folder at the edge and the data center: refuse unsafe ones."""
    try:
        return check_volume_name(name, where)
    except UnsafeInputError as exc:
        raise VolumeError(f"{exc}; pass a volume name explicitly (--name)") from exc


@dataclass
class Volume:
    """An opened volume: (z, y, x) shape, dtype, storage chunk, voxel size, and block reads."""

    source: VolumeSource
    shape: tuple[int, int, int]
    dtype: np.dtype[Any]
    chunk: tuple[int, int, int]
    """Storage grid (z, y, x) of the files that hold the data (shards for sharded zarr v3)."""
    voxel_size: tuple[float, float, float] | None
    """Voxel size (z, y, x), usually nanometres, when the store records it."""
    units: str | None
    store: ts.TensorStore | None = None
    slice_files: dict[int, Path] = field(default_factory=dict)
    context: ts.Context | None = None

    def read(self, bounds: Bounds) -> np.ndarray:
        """Read one box as a C-contiguous numpy array; errors name the volume and the box."""
        (z0, z1), (y0, y1), (x0, x1) = bounds
        if self.source.layout == "slices":
            layers = []
            for z in range(z0, z1):
                try:
                    layers.append(self._open_slice(z)[y0:y1, x0:x1].read().result())
                except (ValueError, OSError, NotImplementedError) as exc:
                    where = self.slice_files.get(z, Path(self.source.location))
                    raise VolumeError(
                        f"{where}: cannot read slice z={z} of z {z0}:{z1} y {y0}:{y1} x {x0}:{x1}: {short_error(exc)}"
                    ) from exc
            return np.ascontiguousarray(np.stack(layers))
        try:
            assert self.store is not None
            data = self.store[z0:z1, y0:y1, x0:x1].read().result()
        except (ValueError, OSError, NotImplementedError) as exc:
            raise VolumeError(
                f"{self.source.location}: cannot read z {z0}:{z1} y {y0}:{y1} x {x0}:{x1}: {short_error(exc)}"
            ) from exc
        return np.ascontiguousarray(data)

    def _open_slice(self, z: int) -> ts.TensorStore:
        path = self.slice_files.get(z)
        if path is None:
            raise VolumeError(f"{self.source.location}: slice z={z} is missing")
        driver = IMAGE_SUFFIXES[path.suffix.lower()]
        image = ts.open({"driver": driver, "kvstore": f"file://{path}"}, context=self.context).result()
        if image.shape[:2] != self.shape[1:]:
            raise VolumeError(f"{path}: slice is {image.shape[:2]}, expected {self.shape[1:]} like the others")
        return image[:, :, 0]

    def storage_keys(self, bounds: Bounds) -> list[Path] | None:
        """Local files holding the box (slice images or chunk/shard files), or None if unknown.

        None means per-file readiness cannot be judged (a remote kvstore, a sharded precomputed
        volume); such volumes rely on a completion marker.
        """
        z0, z1 = bounds[0]
        if self.source.layout == "slices":
            folder = Path(self.source.location)
            return [self.slice_files.get(z, folder / f"<missing slice z={z}>") for z in range(z0, z1)]
        if self.store is None:
            return None
        spec = self.store.spec().to_json()
        kvstore = spec.get("kvstore", {})
        if not isinstance(kvstore, dict) or kvstore.get("driver") != "file":
            return None
        root = Path(kvstore["path"])
        ranges = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(bounds, self.chunk, strict=True)]
        keys: list[Path] = []
        for iz in ranges[0]:
            for iy in ranges[1]:
                for ix in ranges[2]:
                    key = self._chunk_key(spec, (iz, iy, ix))
                    if key is None:
                        return None
                    keys.append(root / key)
        return keys

    def _chunk_key(self, spec: dict[str, Any], index: tuple[int, int, int]) -> str | None:
        layout = self.source.layout
        metadata = spec.get("metadata", {})
        if layout == "zarr":
            separator = metadata.get("dimension_separator", ".")
            return separator.join(str(i) for i in index)
        if layout == "zarr3":
            encoding = metadata.get("chunk_key_encoding", {"name": "default"})
            config = encoding.get("configuration", {})
            if encoding.get("name") == "v2":
                return str(config.get("separator", ".")).join(str(i) for i in index)
            separator = str(config.get("separator", "/"))
            return "c" + separator + separator.join(str(i) for i in index)
        if layout == "n5":
            return "/".join(str(i) for i in index)
        if layout == "precomputed":
            scale = spec.get("scale_metadata", {})
            if scale.get("sharding"):
                return None
            key = scale.get("key")
            if key is None:
                return None
            parts = []
            for axis in (2, 1, 0):
                start = index[axis] * self.chunk[axis]
                stop = min(start + self.chunk[axis], self.shape[axis])
                parts.append(f"{start}-{stop}")
            return f"{key}/{'_'.join(parts)}"
        return None


def _open_chunked(source: VolumeSource, context: ts.Context) -> Volume:
    spec: dict[str, Any] = dict(source.spec) if source.spec else {}
    if not spec:
        driver = next(d for d, layout in CHUNKED_DRIVERS.items() if layout == source.layout)
        spec = {"driver": driver, "kvstore": {"driver": "file", "path": source.location}}
    spec.setdefault("recheck_cached_metadata", "open")
    spec.setdefault("recheck_cached_data", "open")
    try:
        store = ts.open(spec, open=True, read=True, context=context).result()
    except (ValueError, OSError) as exc:
        raise VolumeError(f"{source.location}: cannot open {source.layout} volume: {short_error(exc)}") from exc
    voxel_size: tuple[float, float, float] | None = None
    units: str | None = None
    if source.layout == "precomputed":
        if store.rank != 4 or store.shape[3] != 1:
            raise VolumeError(f"{source.location}: precomputed volume must have exactly one channel")
        resolution = store.spec().to_json().get("scale_metadata", {}).get("resolution")
        if resolution:
            voxel_size, units = (float(resolution[2]), float(resolution[1]), float(resolution[0])), "nm"
        store = store[:, :, :, 0].T
    elif store.rank != 3:
        raise VolumeError(f"{source.location}: expected a 3-D (z, y, x) volume, found rank {store.rank}")
    else:
        voxel_size, units = read_voxel_size(source.layout, source.location)
    write_chunk = store.schema.chunk_layout.write_chunk.shape
    if write_chunk is None or any(c is None for c in write_chunk):
        raise VolumeError(f"{source.location}: the store reports no regular chunk grid")
    chunk = tuple(int(c or 1) for c in write_chunk)
    return Volume(
        source=source,
        shape=(int(store.shape[0]), int(store.shape[1]), int(store.shape[2])),
        dtype=np.dtype(store.dtype.numpy_dtype),
        chunk=(chunk[0], chunk[1], chunk[2]),
        voxel_size=voxel_size,
        units=units,
        store=store,
        context=context,
    )


def list_slice_files(folder: Path, settled_before: float | None = None) -> dict[int, Path]:
    """Slice images in a folder keyed by the z index in their names; duplicate indices are errors.

    With ``settled_before`` (a POSIX time), files modified after it are left out: they may still
    be being written and must not be opened.
    """
    files: dict[int, Path] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.suffix.lower() not in IMAGE_SUFFIXES or entry.name.startswith("."):
            continue
        if settled_before is not None:
            try:
                if entry.stat().st_mtime > settled_before:
                    continue
            except FileNotFoundError:
                continue
        match = _Z_NUMBER.search(entry.stem)
        if match is None:
            continue
        z = int(match.group(1))
        if z in files:
            raise VolumeError(f"{folder}: two slice files for z={z}: {files[z].name} and {entry.name}")
        files[z] = entry
    return files


def _open_slices(source: VolumeSource, context: ts.Context, settled_before: float | None) -> Volume:
    folder = Path(source.location)
    files = list_slice_files(folder, settled_before)
    if not files:
        return Volume(source, (0, 0, 0), np.dtype(np.uint8), (1, 1, 1), None, None, context=context)
    first_z = min(files)
    depth = 0
    while first_z + depth in files:
        depth += 1
    # z numbering may start at 1 (or anywhere): expose the contiguous run from the first index as 0...
    contiguous = {z - first_z: files[z] for z in range(first_z, first_z + depth)}
    first = contiguous[0]
    try:
        image = ts.open(
            {"driver": IMAGE_SUFFIXES[first.suffix.lower()], "kvstore": f"file://{first}"}, context=context
        ).result()
    except (ValueError, OSError, NotImplementedError) as exc:
        raise VolumeError(f"{first}: cannot open slice image: {exc}") from exc
    if image.shape[2] != 1:
        raise VolumeError(f"{first}: slice images must be single-channel greyscale, found {image.shape[2]} channels")
    return Volume(
        source=source,
        shape=(depth, int(image.shape[0]), int(image.shape[1])),
        dtype=np.dtype(image.dtype.numpy_dtype),
        chunk=(1, int(image.shape[0]), int(image.shape[1])),
        voxel_size=None,
        units=None,
        slice_files=contiguous,
        context=context,
    )


def open_volume(source: VolumeSource, context: ts.Context | None = None, settled_before: float | None = None) -> Volume:
    """Open (or re-open, with fresh metadata) a volume; raises ``VolumeError`` with the location.

    ``settled_before`` applies to slice folders: images modified after that time are not opened
    (an empty folder opens as a volume of zero slices). The operator's voxel size, when the
    source carries one, wins over what the store records.
    """
    context = context if context is not None else shared_context()
    if source.layout == "slices":
        volume = _open_slices(source, context, settled_before)
    else:
        volume = _open_chunked(source, context)
    if source.voxel_size is not None:
        volume.voxel_size, volume.units = source.voxel_size, source.units
    return volume
