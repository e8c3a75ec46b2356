"""Deterministic EM-like volumes (membranes, organelles, slow drift, noise) for demos and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tensorstore as ts
import tifffile


def em_like(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A uint8 (z, y, x) volume with cell-like membranes that drift slowly between slices."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    n_cells = max(4, (h * w) // 600)
    centres = rng.uniform(0, 1, (n_cells, 2)) * [h, w]
    drift = rng.normal(0, 0.4, (n_cells, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty(shape, np.uint8)
    for i in range(z):
        pts = centres + drift * i
        d = np.sqrt((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2)
        d.sort(axis=-1)
        edge = d[..., 1] - d[..., 0]  # small near the boundary between two cells
        membrane = np.exp(-(edge**2) / 6.0)
        organelle = (d[..., 0] < 3.5).astype(np.float64)
        image = 170 - 110 * membrane - 60 * organelle + rng.normal(0, 7, (h, w))
        out[i] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out


def write_slice(folder: Path, z: int, image: np.ndarray, fmt: str = "tif") -> Path:
    """Write one slice image as acquisition software does: straight to its final name."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"slice_{z:05d}.{fmt}"
    if fmt == "tif":
        tifffile.imwrite(path, image)
    elif fmt == "png":
        path.write_bytes(imagecodecs.png_encode(image))
    else:
        raise ValueError(f"unknown slice format {fmt!r} (tif or png)")
    return path


def write_slice_folder(volume: np.ndarray, folder: Path, fmt: str = "tif", start: int = 0) -> list[Path]:
    """Write every z slice of ``volume`` as ``slice_<z>.<fmt>`` (z numbered from ``start``)."""
    return [write_slice(folder, start + z, volume[z], fmt) for z in range(volume.shape[0])]


def write_chunked(
    volume: np.ndarray,
    path: Path,
    layout: str,
    chunk: tuple[int, int, int],
    shard: tuple[int, int, int] | None = None,
    voxel_size: tuple[float, float, float] = (30.0, 4.0, 4.0),
) -> None:
    """Write ``volume`` as a zarr, zarr3 (sharded when ``shard`` is given), n5 or precomputed store."""
    shape = [int(s) for s in volume.shape]
    dtype = np.dtype(volume.dtype)
    kvstore = {"driver": "file", "path": str(path)}
    spec: dict[str, Any]
    if layout == "zarr":
        spec = {
            "driver": "zarr",
            "kvstore": kvstore,
            "metadata": {"shape": shape, "chunks": list(chunk), "dtype": dtype.str},
        }
    elif layout == "zarr3":
        grid = list(shard or chunk)
        codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
        if shard is not None:
            codecs = [{"name": "sharding_indexed", "configuration": {"chunk_shape": list(chunk), "codecs": codecs}}]
        spec = {
            "driver": "zarr3",
            "kvstore": kvstore,
            "metadata": {
                "shape": shape,
                "data_type": dtype.name,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
                "codecs": codecs,
                "attributes": {"voxel_size": list(voxel_size), "units": "nm"},
            },
        }
    elif layout == "n5":
        spec = {
            "driver": "n5",
            "kvstore": kvstore,
            "metadata": {
                "dimensions": shape,
                "blockSize": list(chunk),
                "dataType": dtype.name,
                "compression": {"type": "raw"},
            },
        }
    elif layout == "precomputed":
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": kvstore,
            "multiscale_metadata": {"type": "image", "data_type": dtype.name, "num_channels": 1},
            "scale_metadata": {
                "size": shape[::-1],
                "chunk_size": list(chunk)[::-1],
                "encoding": "raw",
                "resolution": list(voxel_size)[::-1],
            },
        }
        store = ts.open(spec, create=True).result()
        store[:, :, :, 0].write(volume.T).result()
        return
    else:
        raise ValueError(f"unknown layout {layout!r}")
    store = ts.open(spec, create=True).result()
    store.write(volume).result()


def write_inbox(
    volume: np.ndarray,
    grid: tuple[int, int, int],
    inbox: Path,
    name: str = "vol",
    codec: dict[str, Any] | None = None,
    acquisition: str | None = None,
    voxel_size: tuple[float, float, float] = (30.0, 8.0, 8.0),
) -> list[Path]:
    """A data center inbox as the edge leaves it: ``<inbox>/<name>/<block>.emz`` + ``.prov.json``.

    Each block of ``grid`` is coded with the codec (``codec`` holds ``Settings`` fields) and gets
    the provenance record the edge writes; returns the containers. For restore tests and benches
    that need received blocks without running the edge flow. ``acquisition`` (32 hex digits) is
    the acquisition id the records carry (none: a record from before acquisition ids);
    ``voxel_size`` (z, y, x) in nm, anisotropic ssTEM-like by default.
    """
    from codec.settings import Settings
    from tasks.edge.encoding import encode_to_outbox, outbox_paths
    from tasks.source.grid import block_grid
    from tasks.store.provenance import new_record, write_record

    settings = Settings().with_overrides(**(codec or {}))
    shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    containers = []
    for block in block_grid(name, shape, grid):
        data = np.ascontiguousarray(volume[block.z0 : block.z1, block.y0 : block.y1, block.x0 : block.x1])
        encoded, _ = encode_to_outbox(block, data, settings, inbox)
        record = new_record(
            block,
            volume_shape=shape,
            block_shape=grid,
            dtype=data.dtype.str,
            voxel_size=voxel_size,
            units="nm",
            source={
                "layout": "generated",
                "acquisition": {"id": acquisition, "origin": "file", "location": "generated"} if acquisition else None,
            },
        )
        record["encoding"] = encoded.encoding
        write_record(outbox_paths(inbox, block)[1], record)
        containers.append(encoded.container_path)
    return containers
