"""The edge scales with the hardware it is given (issue 36): one core, two workers, the coordinator.

    python -m bench.scaleout [--out bench/results_scaleout.json] [--skip-workers] [--skip-ceiling]

1. **One core.** Pinned to one core (``os.sched_setaffinity``, torch on one thread), the FlyEM and
   ISBI volumes of ../shared/data are coded block by block, as the edge codes an acquisition: the
   first block decides the acquisition's model, every next one is coded with it
   (``codec.shared``); beside it the code before (every block warm-started from the previous
   one, its decisions taken again). JPEG-XL e7 codes the same blocks' slices, whole, on one thread.
   Bits are whole-volume against JPEG-XL e7 on whole slices, for 2 MB blocks and for the edge's
   default grid.
2. **Two workers.** ``emzip run --workers 1`` and ``--workers 2`` on FlyEM mirrored to
   192x500x500 (24 blocks of 32x250x250, 2 MB each), at the default effort and at effort 0, each
   restored volume compared with the source; the timing comes from ``--json``.
3. **Convert.** ``emzip convert --workers 1`` and ``--workers 2`` on the same 24 blocks, the
   archive read back and compared with the source.
4. **The coordinator.** A few hundred small blocks at effort 0 on 2 workers: the flow process's
   own CPU and wall time per block (claim, submit, record, ledger, ship), and the blocks per second
   it can feed; then what that means for 100 MB/s and 1 GB/s.
5. **What the hardware allows.** The codec's work alone (a block coded with the acquisition model,
   then decoded) on 16 blocks in 1 process, then 8 + 8 in 2 processes, 5 times; and the CPU every
   process of ``emzip run`` used while the edge coded, 1 worker on 1 core against 2 workers.

Steps 2 and 3 also run ``--workers 1`` pinned to one core (``taskset``, with every process it
starts): the baseline a second core does not help.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
VOLUMES = {"FlyEM": ("flyem_fib_medulla_train250.npy", (32, 250, 250)), "ISBI": ("isbi2012_train.npy", (30, 256, 256))}


def _blocks(volume: np.ndarray, shape: tuple[int, int, int]) -> list[np.ndarray]:
    out = []
    for z in range(0, volume.shape[0], shape[0]):
        for y in range(0, volume.shape[1], shape[1]):
            for x in range(0, volume.shape[2], shape[2]):
                out.append(np.ascontiguousarray(volume[z : z + shape[0], y : y + shape[1], x : x + shape[2]]))
    return out


def one_core(name: str, path: Path, block: tuple[int, int, int]) -> dict[str, Any]:
    """Code ``path``'s volume on one core: the acquisition model, the warm chain before it, JPEG-XL e7."""
    import imagecodecs
    import torch

    from codec.api import decompress, encode
    from codec.settings import Settings
    from tasks.source.grid import choose_block_shape

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    volume = np.load(path)
    settings = Settings(verify=False)  # the edge verifies in another process (reported apart below)
    jxl_bytes = sum(
        len(imagecodecs.jpegxl_encode(np.ascontiguousarray(s), lossless=True, effort=7, numthreads=1)) for s in volume
    )
    default_grid = choose_block_shape((1, *volume.shape[1:]), whole_slices=True, shape=volume.shape)
    out: dict[str, Any] = {"block": list(block), "default_grid": list(default_grid)}
    for label, grid in (("2 MB blocks", block), ("default grid", default_grid)):
        for mode in ("acquisition model", "warm chain (before)"):
            total, times, reasons, warm, shared = 0, [], [], None, None
            for data in _blocks(volume, grid):
                started = time.perf_counter()
                if mode == "acquisition model":
                    result = encode(data, settings, shared=shared)
                else:
                    result = encode(data, settings, warm_start=warm)
                times.append((time.perf_counter() - started, data.nbytes))
                if not np.array_equal(decompress(result.data), data):
                    raise SystemExit(f"{name}: a block did not round-trip")
                total += len(result.data)
                warm, shared = result.model_state, result.shared or shared
                reasons.append(result.reason)
            row: dict[str, Any] = {"bits_vs_jpegxl_e7": total / jxl_bytes, "blocks": len(times)}
            if len(times) > 1:
                later = [t for t, _ in times[1:]]
                row["later_blocks_MB_per_s"] = sum(n for _, n in times[1:]) / sum(later) / 1e6
                row["median_block_s"] = float(np.median(later))
                row["redecided"] = sum("no longer fits" in r for r in reasons)
            row["first_block_s"] = times[0][0]
            out[f"{label}, {mode}"] = row
    # Speed, block by block: a typical later block (acquisition model) against JPEG-XL e7 on its slices.
    blocks = _blocks(volume, block)
    first = encode(blocks[0], settings)
    rows = []
    for data in blocks[1:4]:
        started = time.perf_counter()
        result = encode(data, settings, shared=first.shared)
        emzip_s = time.perf_counter() - started
        started = time.perf_counter()
        decompress(result.data)
        verify_s = time.perf_counter() - started
        started = time.perf_counter()
        for s in data:
            imagecodecs.jpegxl_encode(np.ascontiguousarray(s), lossless=True, effort=7, numthreads=1)
        jxl_s = time.perf_counter() - started
        rows.append((data.nbytes, emzip_s, verify_s, jxl_s))
    nbytes = sum(r[0] for r in rows)
    out["speed"] = {
        "emzip_encode_MB_per_s": nbytes / sum(r[1] for r in rows) / 1e6,
        "emzip_encode_plus_verifying_decode_MB_per_s": nbytes / sum(r[1] + r[2] for r in rows) / 1e6,
        "jpegxl_e7_MB_per_s": nbytes / sum(r[3] for r in rows) / 1e6,
        "cold_first_block_s": first.seconds,
        "cold_first_block_MB_per_s": blocks[0].nbytes / first.seconds / 1e6,
    }
    out["speed"]["ratio_encode"] = out["speed"]["emzip_encode_MB_per_s"] / out["speed"]["jpegxl_e7_MB_per_s"]
    out["speed"]["ratio_with_verify"] = (
        out["speed"]["emzip_encode_plus_verifying_decode_MB_per_s"] / out["speed"]["jpegxl_e7_MB_per_s"]
    )
    return out


def _mirrored_flyem(folder: Path, slices: int = 192) -> np.ndarray:
    """FlyEM mirrored to (slices, 500, 500), written as a zarr v3 acquisition; returns the voxels."""
    import tensorstore as ts

    flyem = np.load(DATA / VOLUMES["FlyEM"][0])
    base = np.concatenate([flyem, flyem[::-1]], axis=0)[:slices]
    wide = np.concatenate([base, base[:, :, ::-1]], axis=2)
    volume = np.ascontiguousarray(np.concatenate([wide, wide[:, ::-1]], axis=1))
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(folder)}}
    layout = ts.ChunkLayout(chunk_shape=[32, 250, 250])
    ts.open(spec, create=True, dtype="uint8", shape=volume.shape, chunk_layout=layout).result().write(volume).result()
    return volume


def _one_core() -> list[str]:
    """A command prefix that runs a command and every process it starts on this machine's first core."""
    return ["taskset", "-c", str(sorted(os.sched_getaffinity(0))[0])]


#: The runs each effort compares: (label, workers, on one core).
RUNS = (("1 worker", 1, False), ("1 worker on 1 core", 1, True), ("2 workers", 2, False))


def _emzip_run(source: Path, dest: Path, workers: int, effort: int, block: str, pin: bool = False) -> dict[str, Any]:
    summary = dest.with_suffix(".json")
    command = [*(_one_core() if pin else []), str(Path(sys.executable).parent / "emzip"), "run", str(source)]
    command += ["--dest", str(dest), "--block", block]
    command += ["--effort", str(effort), "--workers", str(workers), "--json", str(summary), "--name", "vol"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"emzip run failed ({done.returncode}): {done.stderr[-3000:]}")
    return dict(json.loads(summary.read_text()))


def _restored_equal(dest: Path, volume: np.ndarray) -> bool:
    from flows.demo import read_restored

    return bool(np.array_equal(read_restored(dest / "datacenter" / "restored" / "vol.zarr"), volume))


def two_workers(work: Path) -> dict[str, Any]:
    """``emzip run --workers 1`` against ``--workers 2``, default effort and effort 0, same run."""
    source = work / "flyem500.zarr"
    volume = _mirrored_flyem(source)
    out: dict[str, Any] = {"volume": list(volume.shape), "block": "32,250,250"}
    for effort in (2, 0):
        for label, workers, pin in RUNS:
            dest = work / f"run-e{effort}-w{workers}{'-pinned' if pin else ''}"
            timing = _emzip_run(source, dest, workers, effort, "32,250,250", pin)
            timing["identical"] = _restored_equal(dest, volume)
            out[f"effort {effort}, {label}"] = timing
    return out


def convert_workers(work: Path) -> dict[str, Any]:
    """``emzip convert --workers 1`` against ``--workers 2`` on the same 24 blocks, default effort and effort 0."""
    import zarr

    source = work / "flyem500-convert.zarr"
    volume = _mirrored_flyem(source)
    emzip = str(Path(sys.executable).parent / "emzip")
    out: dict[str, Any] = {"volume": list(volume.shape), "block": "32,250,250"}
    for effort in (2, 0):
        for label, workers, pin in RUNS:
            name = f"e{effort}-w{workers}{'-pinned' if pin else ''}"
            archive, summary = work / f"archive-{name}.zarr", work / f"convert-{name}.json"
            command = [
                *(_one_core() if pin else []),
                emzip,
                "convert",
                str(source),
                str(archive),
                "--block",
                "32,250,250",
            ]
            command.append("--quiet")
            command += ["--effort", str(effort), "--workers", str(workers), "--json", str(summary)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"emzip convert failed: {done.stderr[-3000:]}")
            timing = dict(json.loads(summary.read_text()))
            timing["identical"] = bool(np.array_equal(zarr.open_array(str(archive / "0"), mode="r")[...], volume))
            out[f"effort {effort}, {label}"] = timing
    return out


def _codec_in_process(args: tuple[bytes, list[np.ndarray], int]) -> float:
    """Code and decode ``blocks`` with the pickled acquisition model, pinned to ``core``; seconds."""
    import pickle

    import torch

    from codec.api import decompress, encode
    from codec.settings import Settings

    shared_bytes, blocks, core = args
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    shared = pickle.loads(shared_bytes)  # pickled by this benchmark a moment ago; never from disk
    started = time.monotonic()
    for block in blocks:
        decompress(encode(block, Settings(verify=False), shared=shared).data)
    return time.monotonic() - started


def raw_codec_processes(work: Path, repeats: int = 5) -> dict[str, Any]:
    """What the hardware allows: the codec's work on 16 later blocks in 1 process, then 8 + 8 in 2.

    No Prefect, no Dask: a block coded with the acquisition model and decoded, as a worker and its
    verifier do, one thread each (BLAS too, as in a Dask worker: ``OPENBLAS_NUM_THREADS=1``).
    """
    import pickle
    from multiprocessing import get_context

    from bench.environ import environment
    from codec.api import encode
    from codec.settings import Settings

    volume = _mirrored_flyem(work / "raw-codec.zarr")
    blocks = [np.ascontiguousarray(b) for b in _blocks(volume, (32, 250, 250))]
    shared = pickle.dumps(encode(blocks[0], Settings(verify=False)).shared)
    later = blocks[1:17]
    cores = sorted(os.sched_getaffinity(0))[:2]
    rows = []
    one_thread = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # read as the processes start
    with environment(one_thread), get_context("spawn").Pool(2) as pool:
        pool.map(_codec_in_process, [(shared, later[:1], c) for c in cores])  # imports, tables
        for _ in range(repeats):
            one = pool.map(_codec_in_process, [(shared, later, cores[0])])[0]
            two = max(pool.map(_codec_in_process, [(shared, later[:8], cores[0]), (shared, later[8:], cores[1])]))
            rows.append({"one_process_s": round(one, 3), "two_processes_s": round(two, 3), "speedup": one / two})
    speedups = sorted(r["speedup"] for r in rows)
    return {"blocks": len(later), "runs": rows, "median_speedup": speedups[len(speedups) // 2]}


def cpu_in_coding_window(work: Path, effort: int = 2) -> dict[str, Any]:
    """CPU seconds per kind of process while the edge codes (first container written -> last record
    written), for ``--workers 1`` on one core and ``--workers 2``: what a block costs in each."""
    import bisect

    import psutil

    volume_path = work / "cpu-window.zarr"
    _mirrored_flyem(volume_path)
    out: dict[str, Any] = {}
    for label, workers, pin in (("1 worker on 1 core", 1, True), ("2 workers", 2, False)):
        dest = work / f"cpu-{workers}"
        command = [*(_one_core() if pin else []), str(Path(sys.executable).parent / "emzip"), "run", str(volume_path)]
        command += ["--dest", str(dest), "--block", "32,250,250", "--effort", str(effort)]
        command += ["--workers", str(workers), "--name", "vol"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        root = psutil.Process(process.pid)
        samples: list[tuple[float, dict[int, float]]] = []
        kinds: dict[int, str] = {}
        while process.poll() is None:
            now: dict[int, float] = {}
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        times = child.cpu_times()
                        now[child.pid] = times.user + times.system
                        kinds.setdefault(child.pid, _process_kind(child.cmdline()))
            samples.append((time.time(), now))
            time.sleep(0.05)
        outbox = dest / "edge" / "outbox" / "vol"
        start = min(p.stat().st_mtime for p in outbox.glob("*.emz"))
        end = max(p.stat().st_mtime for p in outbox.glob("*.prov.json"))
        stamps = [t for t, _ in samples]
        first = samples[bisect.bisect_left(stamps, start)][1]
        last = samples[min(bisect.bisect_left(stamps, end), len(samples) - 1)][1]
        totals: dict[str, float] = {}
        for pid, seconds in last.items():
            totals[kinds[pid]] = totals.get(kinds[pid], 0.0) + seconds - first.get(pid, 0.0)
        blocks = len(list(outbox.glob("*.emz"))) - 1
        cpu = sum(totals.values())
        out[label] = {
            "window_s": round(end - start, 3),
            "cpu_s": {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
            "cores_busy": round(cpu / (end - start), 3),
            "cpu_s_per_block": round(cpu / blocks, 3),
        }
    return out


def _process_kind(command: list[str]) -> str:
    text = " ".join(command)
    if "emzip" in text and " run " in text:
        return "emzip run (the flow)"
    if "verify_worker" in text:
        return "verifier"
    if "prefect" in text and "server" in text:
        return "Prefect server"
    if "multiprocessing" in text:
        return "Dask workers and nannies"
    return "other"


def coordinator(work: Path, blocks: int = 300) -> dict[str, Any]:
    """The flow's own cost per block: small blocks at effort 0 on 2 Dask workers, flow process CPU and wall."""
    from flows.demo import run_pipeline
    from flows.synthetic import em_like, write_slice_folder

    folder = work / "many" / "vol"
    side = round((blocks / 4) ** 0.5)
    volume = em_like((4 * 4, 32 * side, 32 * side), seed=36)  # 4 z-blocks of 4 slices x side x side tiles of 32
    write_slice_folder(volume, folder)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    result = run_pipeline(folder, work / "many-run", layout="slices", volume_name="vol", block_shape=(4, 32, 32),
                          codec={"effort": 0}, workers=2)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_SELF)
    timing = result["timing"]
    n = timing["blocks"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    coding = timing["coding_seconds"] + timing["model_seconds"]
    return {
        "blocks": n,
        "flow_cpu_s_per_block": cpu / n,
        "edge_wall_s_per_block": timing["edge_seconds"] / n,
        "coding_wall_s_per_block": coding / n,
        "blocks_per_second_fed": n / coding if coding else 0.0,
        "note": "flow process CPU includes its restore flow; workers and the Prefect server are other processes",
        "wall_s": time.monotonic() - started,
    }


def projection(per_core_mb_s: float, efficiency: float, blocks_per_second: float) -> list[dict[str, Any]]:
    """Workers for 100 MB/s and 1 GB/s, and where one coordinator saturates, at the measured rates."""
    rows = []
    for target in (100.0, 1000.0):
        rows.append({"target_MB_per_s": target, "workers": int(np.ceil(target / (per_core_mb_s * efficiency)))})
    for block_mb in (2.0, 4.0, 16.0):
        rows.append({"block_MB": block_mb, "one_coordinator_MB_per_s": blocks_per_second * block_mb})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the measurements, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_scaleout.json"))
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--skip-convert", action="store_true")
    parser.add_argument(
        "--only-convert", action="store_true", help="measure only emzip convert's workers; keep the rest of --out"
    )
    parser.add_argument(
        "--keep-one-core", action="store_true", help="reuse the one-core results already in --out (not measured again)"
    )
    args = parser.parse_args(argv)
    if not (DATA / VOLUMES["FlyEM"][0]).is_file():
        print(f"bench.scaleout: {DATA} has no EM volumes (needs ../shared/data)", file=sys.stderr)
        return 2
    if args.only_convert:
        results = json.loads(Path(args.out).read_text())
        with tempfile.TemporaryDirectory(prefix="emzip-scaleout-") as tmp:
            results["convert workers"] = convert_workers(Path(tmp))
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["convert workers"], indent=2))
        return 0
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, no GPU", "date": time.strftime("%Y-%m-%d")}
    if args.keep_one_core:
        earlier = json.loads(Path(args.out).read_text())
        results.update({k: v for k, v in earlier.items() if k.startswith("one core")})
    for name, (file, block) in VOLUMES.items():
        if f"one core: {name}" in results:
            continue
        code = (
            "import json, sys; from bench.scaleout import one_core; "
            f"print(json.dumps(one_core({name!r}, sys.argv[1], {block!r})))"
        )
        done = subprocess.run([sys.executable, "-c", code, str(DATA / file)], capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        results[f"one core: {name}"] = json.loads(done.stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory(prefix="emzip-scaleout-") as tmp:
        if not args.skip_convert:
            results["convert workers"] = convert_workers(Path(tmp))
        if not args.skip_workers:
            results["two workers"] = two_workers(Path(tmp))
        if not args.skip_ceiling:
            results["coordinator"] = coordinator(Path(tmp))
        results["raw codec, 1 process against 2"] = raw_codec_processes(Path(tmp))
        results["cpu in the coding window"] = cpu_in_coding_window(Path(tmp))
    flyem = results["one core: FlyEM"]["speed"]
    workers = results.get("two workers", {})
    efficiency = 1.0
    if workers:
        one, two = workers["effort 2, 1 worker"], workers["effort 2, 2 workers"]
        efficiency = (one["coding_seconds"] / two["coding_seconds"]) / 2 if two["coding_seconds"] else 1.0
    if "coordinator" in results:
        results["projection"] = projection(
            flyem["emzip_encode_plus_verifying_decode_MB_per_s"],
            efficiency,
            results["coordinator"]["blocks_per_second_fed"],
        )
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
