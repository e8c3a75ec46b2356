"""Viewers read what the data center wrote (issue 34): every reader over HTTP, none with emzip.

``python -m bench.viewers`` builds, from the real FlyEM FIB-SEM volume in ``../shared/data``:

- a restored image (``emzip run``: zstd level 0 and its pyramid), and
- an archive (``emzip convert``: level 0 coded with emzip),

serves each with ``emzip view --serve`` (a separate process), and reads level 0 at full
resolution with neuroglancer (headless Chromium; chunk requests, page errors, a screenshot),
TensorStore's HTTP kvstore, ome-zarr-py and zarr-python with an HTTP store. The last three run in
a virtual environment of their own (``--client-venv``, made on first use) in which emzip is not
installed, and compare the pixels with the source by sha256. It then times the archive's chunks
as served: cold (decoded on request) and warm (from the server's cache), p50 and p95 and MB/s,
beside a static zstd copy of the same level read from the same kind of server.

Results: a table on stdout and ``bench/results_viewers.json``; the neuroglancer screenshots go to
``docs/images/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
#: The packages of the client side: readers only, no emzip.
CLIENT_PACKAGES = ["tensorstore", "zarr>=3.1", "ome-zarr>=0.10", "fsspec", "aiohttp", "requests", "numpy"]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

CLIENT_SCRIPT = r"""
import hashlib, json, sys, time
import numpy as np
for name in ("codec", "tasks", "flows", "emzip"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the client side must not have emzip, but {name} imports")
url, expected = sys.argv[1], sys.argv[2]
out = {}
def check(reader, fn):
    started = time.perf_counter()
    try:
        data = np.ascontiguousarray(fn())
        digest = hashlib.sha256(data.tobytes()).hexdigest()
        out[reader] = {"shape": list(data.shape), "equal": digest == expected, "seconds": time.perf_counter() - started}
    except Exception as exc:
        out[reader] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
def tensorstore_read():
    import tensorstore as ts
    return ts.open({"driver": "zarr3", "kvstore": url + "0/"}, open=True, read=True).result().read().result()
def zarr_read():
    import zarr
    from zarr.storage import FsspecStore
    group = zarr.open_group(FsspecStore.from_url(url, read_only=True), mode="r")
    return group["0"][...]
def ome_zarr_read():
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    node = next(iter(Reader(parse_url(url))()))
    return np.asarray(node.data[0])
check("TensorStore (http kvstore)", tensorstore_read)
check("zarr-python (FsspecStore over HTTP)", zarr_read)
check("ome-zarr-py", ome_zarr_read)
print(json.dumps(out))
"""


def sha256(data: np.ndarray) -> str:
    """sha256 of C-order bytes (what every reader's pixels are compared by)."""
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def client_python(venv: Path) -> Path:
    """The client side's interpreter: a virtual environment with the readers and without emzip."""
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *CLIENT_PACKAGES], capture_output=True, text=True
        )
        if pip.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"cannot install the client readers: {pip.stderr[-2000:]}")
    return python


@contextmanager
def served(image: Path) -> Iterator[str]:
    """``emzip view IMAGE --serve`` in a process of its own; yields the image's URL."""
    emzip = Path(sys.executable).parent / "emzip"
    process = subprocess.Popen(
        [str(emzip), "view", str(image), "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            found = re.search(r"neuroglancer source: zarr3://(http://\S+)", line)
            if found:
                url = found.group(1)
            if line.startswith("serving"):
                break
        if url is None:
            raise RuntimeError(f"emzip view --serve printed no URL for {image}")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def neuroglancer_load(url: str, name: str, image: Path, screenshot: Path, timeout: float = 90.0) -> dict[str, Any]:
    """Open ``url`` in neuroglancer (the client bundled with its Python package, in headless Chromium).

    Returns the level-0 chunk responses, failed responses and page errors, after the page has
    been quiet for two seconds with level-0 chunks loaded; saves ``screenshot``.
    """
    import neuroglancer
    from playwright.sync_api import sync_playwright

    from flows.view import neuroglancer_state

    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    viewer.set_state(neuroglancer.ViewerState(neuroglancer_state(url, name, image)))
    responses: list[tuple[float, int, str]] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("response", lambda r: responses.append((time.monotonic(), r.status, r.url)))
            page.goto(viewer.get_viewer_url())
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                page.wait_for_timeout(500)
                mine = [r for r in responses if r[2].startswith(url)]
                if any("/0/c/" in r[2] for r in mine) and time.monotonic() - mine[-1][0] > 2.0:
                    break
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    mine = [(status, target[len(url) :]) for _, status, target in responses if target.startswith(url)]
    failed = [f"{status} {target}" for _, status, target in responses if status >= 400]
    # Chromium logs each failed load as a console error too ("Failed to load resource"): those
    # are judged by their responses above; the favicon neuroglancer's page asks for is not ours.
    failed = [f for f in failed if not f.endswith("favicon.ico")]
    errors = [e for e in errors if "Failed to load resource" not in e]
    return {
        "level0_chunks": sorted({t for s, t in mine if t.startswith("0/c/") and s in (200, 206)}),
        "range_responses": sum(1 for s, _ in mine if s == 206),
        "failed": failed,
        "errors": errors,
        "screenshot": str(screenshot),
    }


def chunk_latency(url: str, chunks: list[str], rounds: int = 1) -> dict[str, float]:
    """Seconds per chunk request (p50, p95) and MB/s of raw voxels, requests one after another."""
    import httpx

    times: list[float] = []
    payload = 0
    with httpx.Client(timeout=120) as client:
        for _ in range(rounds):
            for key in chunks:
                started = time.perf_counter()
                response = client.get(url + key)
                response.raise_for_status()
                times.append(time.perf_counter() - started)
                payload += len(response.content)
    times.sort()
    return {
        "chunks": len(times),
        "p50_ms": 1000 * statistics.median(times),
        "p95_ms": 1000 * times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "seconds": sum(times),
        "wire_bytes": payload,
    }


def _write_source(volume: np.ndarray, folder: Path, voxel: tuple[float, float, float]) -> Path:
    """The acquisition as an OME-Zarr image (its voxel size and units the image must carry on)."""
    import tensorstore as ts

    store = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(folder / "0")}},
        create=True,
        dtype="uint8",
        shape=volume.shape,
        chunk_layout=ts.ChunkLayout(chunk_shape=[64, 256, 256]),
    ).result()
    store.write(volume).result()
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    dataset = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(voxel)}]}
    ome = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [dataset], "name": folder.stem}]}
    (folder / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"ome": ome}}))
    return folder


def main(argv: list[str] | None = None) -> int:
    """Build the two images, read them with every reader, time the archive's chunks; print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--archive-block", default="32,128,128", help="the archive's block = chunk z,y,x")
    parser.add_argument(
        "--restore-block", default=None, help="the restored image's block (default: emzip's, a sharded level 0)"
    )
    parser.add_argument("--effort", type=int, default=2)
    parser.add_argument("--client-venv", default=str(Path(tempfile.gettempdir()) / "emzip-viewer-client"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_viewers.json"))
    parser.add_argument("--screenshots", default=str(ROOT / "docs" / "images"))
    args = parser.parse_args(argv)
    volume_path = SHARED / "flyem_fib_medulla_train250.npy"
    if not volume_path.is_file():
        print(f"bench.viewers: {volume_path} is absent (needs ../shared/data)", file=sys.stderr)
        return 2
    volume = np.ascontiguousarray(np.load(volume_path, mmap_mode="r")[: args.slices])
    expected = sha256(volume)
    python = client_python(Path(args.client_venv))
    emzip = str(Path(sys.executable).parent / "emzip")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="emzip-viewers-") as tmp:
        work = Path(tmp)
        source = _write_source(volume, work / "flyem.ome.zarr", (8.0, 8.0, 8.0))
        started = time.perf_counter()
        subprocess.run(
            [
                emzip,
                "run",
                str(source),
                "--dest",
                str(work / "site"),
                *(["--block", args.restore_block] if args.restore_block else []),
                "--effort",
                str(args.effort),
                "--name",
                "flyem",
            ],
            check=True,
            capture_output=True,
        )
        run_seconds = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(
            [
                emzip,
                "convert",
                str(source),
                str(work / "flyem-archive.zarr"),
                "--block",
                args.archive_block,
                "--effort",
                str(args.effort),
                "--quiet",
            ],
            check=True,
            capture_output=True,
        )
        convert_seconds = time.perf_counter() - started
        images = {
            "restored": work / "site" / "datacenter" / "restored" / "flyem.zarr",
            "archive": work / "flyem-archive.zarr",
        }
        for kind, image in images.items():
            with served(image) as url:
                shot = Path(args.screenshots) / f"neuroglancer-{kind}.png"
                rows.setdefault("neuroglancer (headless Chromium)", {})[kind] = neuroglancer_load(
                    url, image.stem, image, shot
                )
                read = subprocess.run(
                    [str(python), "-I", "-c", CLIENT_SCRIPT, url, expected], capture_output=True, text=True
                )
                if read.returncode != 0:
                    raise RuntimeError(f"client readers failed on {kind}: {read.stderr[-2000:]}")
                for reader, result in json.loads(read.stdout).items():
                    rows.setdefault(reader, {})[kind] = result
        archive = images["archive"]
        keys = sorted("0/" + str(p.relative_to(archive / "0")) for p in (archive / "0" / "c").rglob("*") if p.is_file())
        with served(archive) as url:
            cold = chunk_latency(url, keys)
            warm = chunk_latency(url, keys, rounds=3)
        # The alternative considered: a standard-codec copy of level 0 beside the archive, served as files.
        hot = work / "hot.zarr"
        shutil.copytree(archive, hot, ignore=shutil.ignore_patterns("0"))
        import tensorstore as ts

        base = json.loads((archive / "0" / "zarr.json").read_text())
        metadata = {
            **base,
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 3}},
            ],
        }
        metadata.pop("zarr_format"), metadata.pop("node_type")
        copy = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(hot / "0")}, "metadata": metadata},
            create=True,
        ).result()
        copy.write(volume).result()
        with served(hot) as url:
            static = chunk_latency(url, keys, rounds=3)
        archive_bytes = sum(p.stat().st_size for p in (archive / "0" / "c").rglob("*") if p.is_file())
        zstd_bytes = sum(p.stat().st_size for p in (hot / "0" / "c").rglob("*") if p.is_file())
    raw_chunk = int(np.prod([int(v) for v in args.archive_block.split(",")]))
    for timing in (cold, warm, static):
        timing["MB_per_s"] = timing["chunks"] * raw_chunk / timing["seconds"] / 1e6
    result = {
        "volume": f"FlyEM FIB-SEM {list(volume.shape)} uint8, 8 nm, archive blocks {args.archive_block}, "
        f"restored blocks {args.restore_block or 'default'}, effort {args.effort}",
        "readers": rows,
        "archive_chunks": {
            "cold (decoded on request)": cold,
            "warm (server's cache)": warm,
            "static zstd copy": static,
        },
        "bytes": {"archive level 0": archive_bytes, "zstd level-0 copy": zstd_bytes, "raw": int(volume.nbytes)},
        "seconds": {"emzip run": run_seconds, "emzip convert": convert_seconds},
        "machine": f"{os.cpu_count()} cores",
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| reader | restored | archive |\n|---|---|---|")
    for reader, kinds in rows.items():
        cells = []
        for kind in ("restored", "archive"):
            cell = kinds.get(kind, {})
            if "level0_chunks" in cell:
                ok = cell["level0_chunks"] and not cell["failed"] and not cell["errors"]
                cells.append(
                    f"{'full resolution' if ok else 'FAILED'}: {len(cell['level0_chunks'])} level-0 chunks, "
                    f"{cell['range_responses']} ranges, {len(cell['failed']) + len(cell['errors'])} errors"
                )
            elif "equal" in cell:
                cells.append(("pixels equal" if cell["equal"] else "PIXELS DIFFER") + f" ({cell['seconds']:.2f} s)")
            else:
                cells.append(f"FAILED: {cell.get('error', 'not run')}")
        print(f"| {reader} | {cells[0]} | {cells[1]} |")
    print("\n| archive level 0 over HTTP | p50 ms | p95 ms | MB/s |\n|---|---|---|---|")
    for label, timing in result["archive_chunks"].items():
        print(f"| {label} | {timing['p50_ms']:.1f} | {timing['p95_ms']:.1f} | {timing['MB_per_s']:.1f} |")
    print(f"\nlevel 0 on disk: archive {archive_bytes} bytes, zstd copy {zstd_bytes} bytes, raw {volume.nbytes}")
    bad = [
        r
        for r, kinds in rows.items()
        for k, c in kinds.items()
        if not (c.get("equal") or (c.get("level0_chunks") and not c.get("failed") and not c.get("errors")))
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
