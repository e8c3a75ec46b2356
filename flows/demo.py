"""``emzip demo`` and ``emzip run``: the whole pipeline on one machine, end to end.

The demo plays microscope: it writes a synthetic EM-like acquisition slice by slice into a local
folder, runs the acquisition flow while the acquisition is half done (only complete blocks are
shipped) and again when it is finished, ships with the local-filesystem backend into a local
"data center", runs the restore flow there, and checks the restored zarr volume against the
original voxel for voxel. Flows run against Prefect's local API (an ephemeral server unless
``PREFECT_API_URL`` points at one).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tensorstore as ts

from flows.acquisition import acquisition_flow
from flows.dask_workers import dask_task_runner, local_dask_cluster
from flows.parameters import CodecParameters, RedeliveryConfig, TransferConfig
from flows.restore import restore_flow
from flows.synthetic import em_like, write_slice
from tasks.datacenter.omezarr import base_array, read_image
from tasks.edge.readiness import DEFAULT_MARKER


def _layout(workdir: Path) -> dict[str, Path]:
    return {
        "acquisition": workdir / "microscope" / "demo",
        "outbox": workdir / "edge" / "outbox",
        "inbox": workdir / "datacenter" / "inbox",
        "restored": workdir / "datacenter" / "restored",
    }


def run_pipeline(
    acquisition: Path,
    workdir: Path,
    *,
    layout: str | None = None,
    volume_name: str | None = None,
    block_shape: tuple[int, int, int] | None = None,
    codec: dict[str, Any] | None = None,
    settle_seconds: float = 0.0,
    assume_complete: bool = True,
    on_changed_source: str = "recode",
    prune_raw: str = "off",
    voxel_size: tuple[float, float, float] | None = None,
    unit: str | None = None,
    workers: int = 1,
    cluster: str | None = None,
) -> dict[str, Any]:
    """Acquisition flow then restore flow, with the local backend; returns both summaries, the
    blocks of the source not restored as the edge last coded them (``missing``: id -> why) and
    the run's ``timing`` (``run_timing``).

    ``workers`` > 1 runs both flows on one local Dask cluster of that many single-threaded worker
    processes (``flows.dask_workers.local_dask_cluster``), ``cluster`` on the Dask cluster at that address.
    """
    edge_parameters: dict[str, Any] = {
        "acquisition": str(acquisition),
        "layout": layout,
        "volume_name": volume_name,
        "block_shape": list(block_shape) if block_shape else None,
        "settle_seconds": settle_seconds,
        "assume_complete": assume_complete,
        "codec": CodecParameters.model_validate(codec) if codec is not None else None,
        "on_changed_source": on_changed_source,
        "prune_raw": prune_raw,
        "voxel_size": list(voxel_size) if voxel_size else None,
        "unit": unit,
    }
    if cluster or workers <= 1:
        return _run_flows(workdir, cluster, edge_parameters)
    started = time.monotonic()
    with local_dask_cluster(workers) as address:  # one cluster for the edge and the restore
        cluster_seconds = time.monotonic() - started
        result = _run_flows(workdir, address, edge_parameters)
    result["timing"]["cluster_start_seconds"] = round(cluster_seconds, 3)
    return result


def _run_flows(workdir: Path, address: str | None, edge_parameters: dict[str, Any]) -> dict[str, Any]:
    """The edge flow then the restore flow, on the Dask cluster at ``address``, or in threads."""
    paths = _layout(workdir)
    transfer = TransferConfig(kind="local", destination=str(paths["inbox"]))
    edge_flow, restore = acquisition_flow, restore_flow
    if address:
        edge_flow = acquisition_flow.with_options(task_runner=dask_task_runner(address=address))
        restore = restore_flow.with_options(task_runner=dask_task_runner(address=address))
    started = time.monotonic()
    edge = edge_flow(outbox=str(paths["outbox"]), transfer=transfer, **edge_parameters)
    edge_seconds = time.monotonic() - started
    started = time.monotonic()
    restored = restore(
        inbox=str(paths["inbox"]),
        restored=str(paths["restored"]),
        redelivery=RedeliveryConfig(outbox=str(paths["outbox"]), transfer=transfer),
    )
    timing = run_timing(edge, edge_seconds, time.monotonic() - started)
    return {"edge": edge, "restore": restored, "missing": missing_after_run(paths, edge), "timing": timing}


def run_timing(edge: dict[str, Any], edge_seconds: float, restore_seconds: float) -> dict[str, Any]:
    """What ``emzip run --json`` writes: the edge's and the restore's wall time (workers' start-up
    included), the megabytes and blocks coded, the workers, and the edge's two phases: until the
    acquisition's model was decided (``model_seconds``) and from then until the last block was
    verified (``coding_seconds``)."""
    megabytes = edge["this_run"].get("raw_bytes", 0) / 1e6
    return {
        "edge_seconds": round(edge_seconds, 3),
        "restore_seconds": round(restore_seconds, 3),
        "megabytes": round(megabytes, 3),
        "blocks": edge["this_run"]["coded"],
        "workers": edge.get("workers", 1),
        "model_seconds": edge.get("model_seconds", 0.0),
        "coding_seconds": edge.get("coding_seconds", 0.0),
        "workers_start_seconds": edge.get("workers_start_seconds", 0.0),
        "megabytes_per_second": round(megabytes / edge_seconds, 3) if edge_seconds > 0 else 0.0,
    }


def missing_after_run(paths: dict[str, Path], edge: dict[str, Any]) -> dict[str, str]:
    """Block id -> why, for every block of the source that the run did not restore as the edge last coded it."""
    from tasks.datacenter.completeness import run_gaps
    from tasks.store.ledger import Ledger

    volume = edge["volume"]
    with Ledger(paths["outbox"] / "ledger.sqlite") as at_edge, Ledger(paths["restored"] / "ledger.sqlite") as at_dc:
        return run_gaps(at_edge, at_dc, volume, tuple(edge["shape"]), tuple(edge["grid"]))


def png_bits_per_voxel(volume: np.ndarray) -> float:
    """PNG (level 9, slice by slice) bits per voxel, the classic baseline the demo compares with."""
    total = sum(len(imagecodecs.png_encode(np.ascontiguousarray(s), level=9)) for s in volume)
    return 8.0 * total / volume.size


def jpegxl_bits_per_voxel(volume: np.ndarray, effort: int = 7) -> float:
    """JPEG-XL lossless (``effort`` 7, cjxl's default, slice by slice) bits per voxel: the codec a
    facility would otherwise use, so the one the demo's summary puts emzip beside."""
    total = sum(len(imagecodecs.jpegxl_encode(np.ascontiguousarray(s), lossless=True, effort=effort)) for s in volume)
    return 8.0 * total / volume.size


def read_restored(path: Path, level: int = 0) -> np.ndarray:
    """One level of a restored OME-Zarr image (or the plain array restored before OME-Zarr) as numpy.

    Level 0 of an archive is read through zarr-python (its chunks are emzip containers); the
    rest through TensorStore.
    """
    array = base_array(path) if level == 0 else path / str(level)
    metadata = json.loads((array / "zarr.json").read_text())
    if metadata.get("codecs", [{}])[0].get("name") == "emzip":
        import zarr

        return np.asarray(zarr.open_array(str(array), mode="r")[...])
    store = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(array)}}, open=True).result()
    return np.asarray(store.read().result())


def run_demo(
    workdir: Path,
    shape: tuple[int, int, int] = (32, 128, 256),
    block_shape: tuple[int, int, int] = (16, 128, 128),
    codec: dict[str, Any] | None = None,
    seed: int = 0,
    say: Any = print,
) -> dict[str, Any]:
    """Generate, acquire slice by slice, compress, ship, restore, compare; returns the summary."""
    started = time.monotonic()
    paths = _layout(workdir)
    volume = em_like(shape, seed=seed)
    codec = codec if codec is not None else {"effort": 1}
    say(f"microscope: writing a synthetic EM-like acquisition {shape} into {paths['acquisition']}")
    half = shape[0] // 2
    for z in range(half):
        write_slice(paths["acquisition"], z, volume[z])
    say(f"edge: scanning while acquisition is at slice {half} of {shape[0]}")
    scan = {
        "layout": "slices",
        "volume_name": "demo",
        "block_shape": block_shape,
        "codec": codec,
        "assume_complete": False,
    }
    first = run_pipeline(paths["acquisition"], workdir, **scan)  # type: ignore[arg-type]
    for z in range(half, shape[0]):
        write_slice(paths["acquisition"], z, volume[z])
    (paths["acquisition"] / DEFAULT_MARKER).touch()
    say("edge: acquisition finished; scanning again")
    second = run_pipeline(paths["acquisition"], workdir, **scan)  # type: ignore[arg-type]
    restored = read_restored(paths["restored"] / "demo.zarr")
    identical = restored.shape == volume.shape and bool(np.array_equal(restored, volume))
    progress = second["edge"]["progress"]
    summary = {
        "shape": list(shape),
        "blocks": sum(progress.values()),
        "shipped_first_scan": first["edge"]["progress"]["shipped"],
        "restored": second["restore"]["progress"]["restored"],
        "failed": progress["failed"],
        "bits_per_voxel": second["edge"]["bits_per_voxel"],
        "png_bits_per_voxel": png_bits_per_voxel(volume),
        "jpegxl_bits_per_voxel": jpegxl_bits_per_voxel(volume),
        "levels": len(read_image(paths["restored"] / "demo.zarr").levels),  # type: ignore[union-attr]
        "identical": identical,
        "seconds": time.monotonic() - started,
        "restored_path": str(paths["restored"] / "demo.zarr"),
    }
    return summary


def _versus(summary: dict[str, Any]) -> str:
    ratio = summary["bits_per_voxel"] / summary["jpegxl_bits_per_voxel"]
    return f"{(1 - ratio) * 100:.1f}% smaller" if ratio <= 1 else f"{(ratio - 1) * 100:.1f}% larger"


def format_summary(summary: dict[str, Any]) -> str:
    """The demo's closing lines for the terminal."""
    verdict = "IDENTICAL to the original" if summary["identical"] else "DIFFERENT from the original (a bug: report it)"
    return "\n".join(
        [
            f"blocks: {summary['blocks']} ({summary['shipped_first_scan']} shipped while acquiring, "
            f"{summary['restored']} restored, {summary['failed']} failed)",
            f"bits per voxel: emzip {summary['bits_per_voxel']:.3f}, JPEG-XL lossless (effort 7) "
            f"{summary['jpegxl_bits_per_voxel']:.3f} (emzip {_versus(summary)}), PNG "
            f"{summary['png_bits_per_voxel']:.3f}, raw 8",
            f"time: {summary['seconds']:.0f} s",
            f"restored volume {summary['restored_path']}: {verdict}",
            f"it is an OME-Zarr 0.5 image with {summary['levels']} resolution levels; open it with "
            f"`emzip view {summary['restored_path']}` (neuroglancer source, or --serve for a browser)",
        ]
    )
