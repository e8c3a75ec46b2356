"""The ``emzip`` command line: compress, decompress and inspect blocks; run the pipeline.

Prefect is imported only by the commands that run flows, so codec commands start fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.volume_io import VolumeFileError, read_volume, refuse_same_file, write_volume
from tasks.store.atomic import atomic_write_bytes

if TYPE_CHECKING:
    import numpy as np


class _Progress:
    """One self-overwriting status line on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.5 and done < total):
            return
        self.last = now
        sys.stderr.write(f"\r{stage}: {done}/{total}   ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _compress(args: argparse.Namespace) -> int:
    from codec import Settings, encode

    refuse_same_file(Path(args.input), Path(args.output))
    volume = read_volume(Path(args.input))
    settings = Settings(effort=args.effort, device=args.device, seed=args.seed, codec=args.codec)
    result = encode(volume, settings, progress=_Progress(not args.quiet))
    atomic_write_bytes(Path(args.output), result.data)
    bpv = 8.0 * len(result.data) / max(volume.size, 1)
    print(
        f"{args.output}: {result.codec} ({result.reason}); {volume.nbytes} -> {len(result.data)} bytes, "
        f"{bpv:.3f} bits per voxel, {result.seconds:.1f} s, round trip verified"
    )
    return 0


def _decompress(args: argparse.Namespace) -> int:
    from codec import decompress

    source = Path(args.input)
    if not source.is_file():
        raise VolumeFileError(f"{source}: no such file")
    refuse_same_file(source, Path(args.output))
    array = decompress(source.read_bytes(), progress=_Progress(not args.quiet))
    write_volume(Path(args.output), array)
    print(f"{args.output}: {array.dtype} {array.shape}, checksum verified")
    return 0


def _info(args: argparse.Namespace) -> int:
    from codec import inspect

    source = Path(args.file)
    if not source.is_file():
        raise VolumeFileError(f"{source}: no such file")
    info = inspect(source.read_bytes())
    print(
        json.dumps(
            {
                "file": str(source),
                "codec": info.codec,
                "dtype": info.dtype,
                "shape": list(info.shape),
                "sha256": info.sha256,
                "compressed_bytes": info.compressed_bytes,
                "bits_per_voxel": round(info.bits_per_voxel, 4),
                "config": info.config,
            },
            indent=2,
        )
    )
    return 0


def _quiet_prefect() -> None:
    """No usage telemetry from the local server (its heartbeat also races the SQLite database),
    and time for a first start: in a fresh virtual environment the local API server took
    longer than Prefect's default start-up wait to come up (seen once: the demo failed at 40 s)."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


class _NoTracebackOnConsole:
    """A logging filter for the console: a failed flow's traceback goes to the Prefect run log, not the terminal.

    The ``run`` command prints one clean line for the errors it knows; Prefect's flow engine also
    logs the exception with its traceback. The run's own log handler (on ``prefect.flow_runs``)
    sees the record first, whole; this filter sits on the root logger's console handler, which
    sees it after, and drops only the traceback there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.getMessage()} (traceback in the run's log)"
            record.args = ()
        return True


def _console_without_tracebacks() -> None:
    """Install ``_NoTracebackOnConsole`` on the root logger's handlers (Prefect's console handler)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _NoTracebackOnConsole) for f in handler.filters):
            handler.addFilter(_NoTracebackOnConsole())


def _demo(args: argparse.Namespace) -> int:
    """The whole pipeline on a generated acquisition, against Prefect's local API."""
    _quiet_prefect()
    from flows.demo import format_summary, run_demo

    codec = {"effort": args.effort, **({"steps": args.steps} if args.steps else {})}
    summary = run_demo(
        Path(args.workdir),
        shape=(args.slices, args.height, args.width),
        block_shape=(args.block, args.height, args.width // 2 if args.width >= 64 else args.width),
        codec=codec,
        seed=args.seed,
    )
    print(format_summary(summary))
    return 0 if summary["identical"] and not summary["failed"] else 1


def _run(args: argparse.Namespace) -> int:
    """The pipeline on a real acquisition (already acquired: every block is ready)."""
    _quiet_prefect()
    from flows.demo import run_pipeline
    from tasks.source.volumes import VolumeError, resolve_source
    from tasks.store.ledger import LedgerError

    _console_without_tracebacks()
    block = _block_shape(args.block)
    try:
        voxel = _voxel_size(args.voxel_size)
        resolve_source(
            args.acquisition, args.name, args.layout, identify=False, voxel_size=voxel
        )  # errors before Prefect
        result = run_pipeline(
            Path(args.acquisition),
            Path(args.dest),
            layout=args.layout,
            volume_name=args.name,
            block_shape=block,
            codec={"effort": args.effort},
            assume_complete=True,
            on_changed_source=args.on_change,
            voxel_size=voxel,
            unit=args.unit,
            workers=args.workers,
            cluster=args.cluster,
        )
    except (VolumeError, LedgerError) as exc:
        print(f"emzip run: {exc}", file=sys.stderr)
        return 2
    timing = result["timing"]
    print(" ".join(f"{key}={value}" for key, value in timing.items()))
    if args.json:
        from tasks.store.atomic import atomic_write_json

        atomic_write_json(Path(args.json), {**timing, "volume": result["edge"]["volume"]})
    edge, restored, missing = result["edge"], result["restore"], result["missing"]
    now = edge["this_run"]
    print(
        f"{edge['volume']}: this run coded {now['coded']} blocks ({len(now['recoded'])} of them again, as new "
        f"versions) and shipped {now['shipped']}; the volume has {edge['progress']['shipped']} blocks shipped at "
        f"{edge['bits_per_voxel']:.3f} bits/voxel and {len(edge['failures'])} failed; "
        f"{len(restored['rows'])} restored by this run under {args.dest}"
    )
    if missing:
        print(f"emzip run: {edge['volume']}: {len(missing)} blocks of the source are not restored:", file=sys.stderr)
        for block_id, why in sorted(missing.items()):
            print(f"  {block_id}: {why}", file=sys.stderr)
        dest = Path(args.dest)
        print(
            "emzip run: once the cause is fixed, put failed blocks back and run again: "
            f"emzip retry {dest / 'edge' / 'outbox' / 'ledger.sqlite'} --side edge; "
            f"emzip retry {dest / 'datacenter' / 'restored' / 'ledger.sqlite'} --side datacenter",
            file=sys.stderr,
        )
        return 1
    return 0 if not edge["failures"] else 1


def _triple(text: str | None, option: str, kind: type[int] | type[float]) -> tuple[Any, Any, Any] | None:
    """``--option z,y,x`` as three positive numbers of ``kind`` (None when absent; a one-line error otherwise)."""
    if not text:
        return None
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        noun = "integers" if kind is int else "numbers"
        raise VolumeFileError(f"{option} {text!r}: expected three positive {noun} z,y,x")
    return values[0], values[1], values[2]


def _block_shape(text: str | None) -> tuple[int, int, int] | None:
    """``--block z,y,x`` as three positive integers."""
    return _triple(text, "--block", int)


def _voxel_size(text: str | None) -> tuple[float, float, float] | None:
    """``--voxel-size z,y,x`` as three positive numbers."""
    return _triple(text, "--voxel-size", float)


def _add_voxel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--voxel-size",
        default=None,
        help="voxel size z,y,x (e.g. 8,8,8) for a source that records none (TIFF slices); wins over the source's",
    )
    parser.add_argument("--unit", default=None, help="unit of --voxel-size (default nanometer): nm, um, nanometer, ...")


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_positive,
        default=os.cpu_count() or 1,
        help="blocks coded at once: a local Dask cluster of N single-threaded workers (default: this node's "
        "cores; 1: no cluster)",
    )
    parser.add_argument("--cluster", default=None, help="an existing Dask scheduler's address (tcp://HOST:8786)")
    parser.add_argument("--json", default=None, help="write the run's timing summary to this JSON file")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def _convert(args: argparse.Namespace) -> int:
    """An emzip-coded zarr v3 copy of a volume on disk (resumable; the source is only read)."""
    from codec.settings import Settings
    from tasks.datacenter.convert import convert_volume
    from tasks.datacenter.convert_pool import DaskPool
    from tasks.source.volumes import VolumeError, resolve_source

    block = _block_shape(args.block)
    try:
        source = resolve_source(  # the source is only read
            args.source,
            args.name,
            args.layout,
            write_id=False,
            voxel_size=_voxel_size(args.voxel_size),
            units=args.unit,
        )
        started = time.monotonic()
        pool = None if args.workers == 1 and not args.cluster else DaskPool(args.workers, args.cluster)
        try:
            report = convert_volume(
                source, Path(args.output), Settings(effort=args.effort), block, _Progress(not args.quiet), pool
            )
        finally:
            if pool is not None:
                pool.close()
    except VolumeError as exc:
        print(f"emzip convert: {exc}", file=sys.stderr)
        return 2
    seconds = time.monotonic() - started
    timing = {
        "seconds": round(seconds, 3),
        "megabytes": round(report.source_bytes / 1e6, 3),
        "blocks": report.converted,
        "workers": pool.width if pool is not None else 1,
        "megabytes_per_second": round(report.source_bytes / 1e6 / seconds, 3) if seconds > 0 else 0.0,
        "model_seconds": report.model_seconds,
        "coding_seconds": report.coding_seconds,
        "pyramid_seconds": report.pyramid_seconds,
    }
    if args.json:
        from tasks.store.atomic import atomic_write_json

        atomic_write_json(Path(args.json), {**timing, "archive": str(report.archive)})
    bits = 8.0 * report.archive_bytes / max(report.source_bytes, 1)
    print(
        f"{report.archive}: {report.converted} blocks converted now ({len(report.recoded)} of them again, as new "
        f"versions of blocks that grew), {report.already_done} before, {report.blocks} in all; "
        f"{bits:.3f} bits per byte of the source"
    )
    if report.missing:
        print(f"emzip convert: {len(report.missing)} blocks of the source are not in the archive:", file=sys.stderr)
        for block_id, why in sorted(report.missing.items()):
            print(f"  {block_id}: {why}", file=sys.stderr)
        print("emzip convert: run the same command again to convert them", file=sys.stderr)
        return 1
    return 0


def _retry(args: argparse.Namespace) -> int:
    """Put failed blocks back to be tried again, whatever their attempts (their cause was fixed)."""
    from tasks.store.ledger import Ledger, LedgerError

    path = Path(args.ledger)
    if not path.is_file():
        print(f"emzip retry: {path}: no such ledger", file=sys.stderr)
        return 2
    to_state = "discovered" if args.side == "edge" else "shipped"
    try:
        with Ledger(path) as ledger:
            failures = dict(ledger.failures(args.volume))
            count = ledger.retry_failed(args.volume, None, to_state)
    except LedgerError as exc:
        print(f"emzip retry: {exc}", file=sys.stderr)
        return 2
    for block_id, reason in sorted(failures.items()):
        print(f"{block_id}: retried (failed: {reason})")
    print(f"{count} failed blocks back to {to_state}; the next run tries them again")
    return 0


def _load_for_bench(target: str) -> tuple[str, np.ndarray]:
    """A whole volume for ``emzip bench``: .npy, TIFF stack, or any volume the pipeline reads."""
    path = Path(target)
    if path.is_dir() or target.lstrip().startswith("{"):
        from tasks.source.volumes import open_volume, resolve_source

        source = resolve_source(target, identify=False)
        volume = open_volume(source)
        return source.name, volume.read(((0, volume.shape[0]), (0, volume.shape[1]), (0, volume.shape[2])))
    return path.stem, read_volume(path)


def _bench(args: argparse.Namespace) -> int:
    """emzip against the classic codecs on the given volumes; table, results files and figures."""
    from codec import Settings
    from tasks.benchmark import run_volume
    from tasks.figures import bitrate_figure, markdown_table, prediction_figure, write_results

    block = _block_shape(args.block)
    assert block is not None  # --block has a default
    settings = Settings(effort=args.effort, verify=False)
    rows: list[dict[str, Any]] = []
    per_volume: dict[str, Any] = {}
    details = {"settings": settings.to_json(), "block_shape": list(block), "volumes": per_volume}
    out = Path(args.out) if args.out else None
    for target in args.volumes:
        name, volume = _load_for_bench(target)
        print(f"{name}: {volume.dtype} {volume.shape}", flush=True)
        result = run_volume(name, volume, settings, block, args.slow, say=lambda line: print(line, flush=True))
        rows.extend(result.rows())
        per_volume[name] = {
            "shape": list(volume.shape),
            "blocks": [vars(b) for b in result.blocks],
            "batched_decode_MBps": result.batched_decode,
        }
        if out and result.figure_block is not None:
            out.mkdir(parents=True, exist_ok=True)
            prediction_figure(*result.figure_block, out / f"prediction-{name}.png", title=name)
    print(markdown_table(rows))
    if out:
        bitrate_figure(rows, out / "bitrates.png")
        command = "emzip bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "emzip bench"
        notes = "\n".join(
            f"- {name}: emzip decode of all blocks with `decompress_many`, one torch thread: "
            + ", ".join(f"{k} {v:.2f} MB/s" for k, v in info["batched_decode_MBps"].items())
            for name, info in per_volume.items()
        )
        write_results(out, command, rows, details, notes)
        print(f"wrote {out / 'results.md'}, {out / 'results.json'} and figures")
    return 0


def _watch(args: argparse.Namespace) -> int:
    """Emit a Prefect event whenever an acquisition file under ROOT is complete."""
    import logging

    from flows.watch import watch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sent = watch(Path(args.root), debounce=args.debounce)
    print(f"stopped; {sent} events sent")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    """Bootstrap a Prefect server: pools, per-GPU limits, deployments (idempotent)."""
    import os

    from flows.operations import DeployError, deploy

    api_url = args.api_url or os.environ.get("PREFECT_API_URL")
    if not api_url:
        print("emzip: error: give --api-url or set PREFECT_API_URL", file=sys.stderr)
        return 2
    try:
        created = deploy(api_url, gpus=args.gpus, timeout=args.timeout)
    except DeployError as exc:
        print(f"emzip: error: {exc}", file=sys.stderr)
        return 1
    print("created: " + (", ".join(created) if created else "nothing (already in place)") + "; deployments applied")
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Serve the deployments from this process (one workstation, no separate worker)."""
    from flows.operations import serve_all

    root = Path(args.workdir)
    inbox = args.destination or str(root / "datacenter" / "inbox")  # one station: edge ships to its own inbox
    serve_all(
        acquisition_root=args.acquisition_root,
        outbox=str(root / "edge" / "outbox"),
        destination=inbox,
        inbox=inbox,
        restored=str(root / "datacenter" / "restored"),
        interval=args.interval,
    )
    return 0


def _view(args: argparse.Namespace) -> int:
    """Say how to open a restored volume; with --serve, serve it to every viewer until Ctrl-C."""
    import time

    from flows.view import ViewError, describe
    from flows.view_server import ServedImage, start_server

    path = Path(args.path)
    try:
        if not args.serve:
            print("\n".join(describe(path)))
            return 0
        describe(path)  # refuse a path that is not a volume before opening a port
    except ViewError as exc:
        print(f"emzip: error: {exc}", file=sys.stderr)
        return 2
    served = ServedImage(path, cache_bytes=int(args.cache_mb) << 20)
    try:
        with start_server(served, args.host, args.port) as url:
            print("\n".join(describe(path, url)), flush=True)
            print("serving; Ctrl-C stops", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        served.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``emzip`` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="emzip", description="Lossless learned compression of EM volumes.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="compress a .npy or TIFF stack into an .emz container")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--effort", type=int, default=2, help="training budget 0-4 (0: classic codec only)")
    c.add_argument("--device", default="auto", help="auto, cpu or cuda")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--codec", default="auto", choices=["auto", "learned", "jpegxl", "lzma"])
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_compress)
    d = sub.add_parser("decompress", help="decode an .emz container into .npy or TIFF")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_decompress)
    i = sub.add_parser("info", help="describe an .emz container (checks its checksums, no decoding)")
    i.add_argument("file")
    i.set_defaults(func=_info)
    m = sub.add_parser("demo", help="the whole pipeline on a generated acquisition (Prefect, local transfer)")
    m.add_argument("--workdir", default="emzip-demo", help="folder for the microscope, edge and data center")
    m.add_argument("--slices", type=int, default=32)
    m.add_argument("--height", type=int, default=128)
    m.add_argument("--width", type=int, default=256)
    m.add_argument("--block", type=int, default=16, help="slices per block")
    m.add_argument("--effort", type=int, default=1, help="training budget 0-4")
    m.add_argument("--steps", type=int, default=None, help="training steps (overrides effort)")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=_demo)
    r = sub.add_parser("run", help="the pipeline on a real acquisition folder into DEST (local transfer)")
    r.add_argument("acquisition", help="zarr/zarr3/n5/precomputed folder or a folder of TIFF/PNG slices")
    r.add_argument("--dest", required=True, help="working folder: edge outbox and data center inbox/restored")
    r.add_argument("--layout", default=None, choices=["zarr", "zarr3", "n5", "precomputed", "slices"])
    r.add_argument("--block", default=None, help="block shape z,y,x (default 64 slices, ~512 in y and x)")
    r.add_argument("--effort", type=int, default=2)
    r.add_argument(
        "--name",
        default=None,
        help="volume id, used as is (default: the folder name plus the acquisition's id, never shared "
        "by two acquisitions)",
    )
    r.add_argument(
        "--on-change",
        default="recode",
        choices=["recode", "refuse"],
        help="raw data of blocks already coded changed: code and ship them again as new versions (default), "
        "or refuse the run, naming the slices",
    )
    _add_voxel_options(r)
    _add_worker_options(r)
    r.set_defaults(func=_run)
    k = sub.add_parser("convert", help="an emzip-coded OME-Zarr copy, with pyramid, of a zarr/N5/TIFF volume")
    k.add_argument("source", help="zarr/zarr3/n5/precomputed folder, a folder of TIFF/PNG slices, or a spec")
    k.add_argument("output", help="the archive to write (a .zarr folder); run again to resume")
    k.add_argument("--layout", default=None, choices=["zarr", "zarr3", "n5", "precomputed", "slices"])
    k.add_argument("--name", default=None, help="volume id (default: the folder name plus the acquisition's id)")
    k.add_argument("--block", default=None, help="block = chunk shape z,y,x (default 64 slices, ~512 in y and x)")
    k.add_argument("--effort", type=int, default=2)
    k.add_argument("--quiet", action="store_true")
    _add_voxel_options(k)
    _add_worker_options(k)
    k.set_defaults(func=_convert)
    t = sub.add_parser("retry", help="put failed blocks back to be tried again by the next run")
    t.add_argument("ledger", help="the ledger: <outbox>/ledger.sqlite (edge) or the restore flow's ledger")
    t.add_argument(
        "--side", required=True, choices=["edge", "datacenter"], help="edge: encode again; datacenter: restore again"
    )
    t.add_argument("--volume", default=None, help="only this volume id")
    t.set_defaults(func=_retry)
    b = sub.add_parser("bench", help="emzip against PNG, JPEG-XL, JPEG-LS, JPEG 2000, WebP, zstd, xz")
    b.add_argument("volumes", nargs="+", help=".npy, TIFF stack, or an acquisition volume folder/spec")
    b.add_argument("--out", default=None, help="write results.md, results.json and figures here")
    b.add_argument("--effort", type=int, default=2)
    b.add_argument("--block", default="64,256,256", help="block shape z,y,x")
    b.add_argument("--slow", action="store_true", help="JPEG-XL at effort 9 instead of 7")
    b.set_defaults(func=_bench)
    w = sub.add_parser("watch", help="emit Prefect events when acquisition files under ROOT are complete")
    w.add_argument("root")
    w.add_argument("--debounce", type=float, default=5.0, help="seconds between events per volume")
    w.set_defaults(func=_watch)
    p = sub.add_parser("deploy", help="bootstrap a Prefect server: work pools, GPU limits, deployments")
    p.add_argument("--api-url", default=None, help="default: $PREFECT_API_URL")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per edge node (one concurrency limit each)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server's health")
    p.set_defaults(func=_deploy)
    o = sub.add_parser("view", help="open a restored OME-Zarr volume: neuroglancer source, napari, zarr")
    o.add_argument("path", help="a restored volume (<restored>/<volume>.zarr) or a converted archive")
    o.add_argument(
        "--serve",
        action="store_true",
        help="serve it over HTTP (Range, CORS; an archive decoded on request) for any viewer",
    )
    o.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: the facility's network)")
    o.add_argument("--port", type=int, default=8000)
    o.add_argument("--cache-mb", type=int, default=512, help="decoded archive chunks kept (MB)")
    o.set_defaults(func=_view)
    v = sub.add_parser("serve", help="serve the deployments from this process (single workstation)")
    v.add_argument("acquisition_root")
    v.add_argument("--workdir", default="emzip-station")
    v.add_argument("--destination", default=None, help="data center inbox (default under --workdir)")
    v.add_argument("--interval", type=float, default=300.0, help="seconds between scheduled scans")
    v.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emzip`` console script."""
    from codec import EmzipError
    from tasks.store.failpoints import disarm

    if disarm():
        print("emzip: warning: EMZIP_FAILPOINT* variables ignored (crash tests only)", file=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (VolumeFileError, EmzipError) as exc:
        name = getattr(args, "input", None) or getattr(args, "file", "")
        message = str(exc) if isinstance(exc, VolumeFileError) else f"{name}: {exc}"
        print(f"emzip: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output that cannot be written: the message names the file (tasks.store.atomic)
        print(f"emzip: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
