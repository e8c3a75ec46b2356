"""The engine's bytes do not depend on the compiler or its flags; and its speed against an earlier engine.

    python -m bench.engine_exactness [--models 300] [--against 490c103]

Table 1: the engine built with gcc and clang (Debian's ``clang`` package), at -O0 and -O3, and
``-O3 -march=native``; each build re-encodes and decodes the v4 goldens, codes ``--models`` random
models (every field's range) on random blocks, and codes 16x256x256 blocks of the shared EM
volumes with the goldens' models (``bench.engine_builds.STREAM_DIGEST``). Every build must print
the same SHA-256 over all of it. A compiler that is not installed is listed as skipped.

Table 2: the engine of ``--against`` (a git revision) and this one, built alike (gcc -O3) and
loaded side by side in one process, decoding the same streams of 64x256x256 blocks of the shared
volumes (coded with the goldens' models: the default context and width) on 1 and 2 threads, in
alternating rounds: MB/s of each, and whether they decoded the same bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import engine_builds

REPO = engine_builds.REPO
GOLDEN = REPO / "tests" / "golden"
DATA = REPO.parent / "shared" / "data"
BUILDS = (
    ("gcc", ("-O3",)),
    ("gcc", ("-O0",)),
    ("gcc", ("-O3", "-march=native")),
    ("clang", ("-O3",)),
    ("clang", ("-O0",)),
)

#: Run with the current ``codec`` and two engine files: decode the same streams with each, alternately.
_SIDE_BY_SIDE = """
import importlib.util, json, sys, time
from pathlib import Path
import numpy as np
from codec import container
from codec.v4 import block as v4_block, engine
from codec.v4.tables import coder_tables
golden, data, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
engines = {}
for label, path in (("base", sys.argv[4]), ("current", sys.argv[5])):
    spec = importlib.util.spec_from_file_location("codec._engine", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    engines[label] = module
rows = []
pairs = (("flyem_fib_medulla_train250", "learned_gaussian_v4.emz"), ("isbi2012_train", "learned_v4.emz"))
for name, model_name in pairs:
    path = data / f"{name}.npy"
    if not path.exists():
        continue
    volume = np.load(path, mmap_mode="r")
    block = np.ascontiguousarray(volume[:64, :256, :256], dtype=np.uint8)
    parsed = container.unpack((golden / model_name).read_bytes())
    job = v4_block.parse(parsed.config, parsed.model, parsed.data, parsed.header.shape)
    streams = engine.encode_block(block, job.model, job.family, 2)
    t = coder_tables(job.family)
    starts = [0, block.shape[1] // 2, block.shape[1]]
    stripes = [(starts[s], starts[s + 1], np.frombuffer(streams[s], "<u4").copy()) for s in range(2)]
    model = np.ascontiguousarray(job.model, dtype=np.int32)
    for threads in (1, 2):
        best = {label: float("inf") for label in engines}
        outputs = {}
        for _ in range(rounds):
            for label, module in engines.items():
                out = np.zeros(block.shape, np.uint8)
                began = time.perf_counter()
                module.decode_block(out, *block.shape, model, t.cum, t.lut, stripes, threads)
                best[label] = min(best[label], time.perf_counter() - began)
                outputs[label] = out
        same = all(np.array_equal(o, block) for o in outputs.values())
        bits = 8 * sum(len(s) for s in streams) / block.size
        rows.append({"volume": name, "threads": threads, "bits_per_voxel": round(bits, 4),
                     "base_mb_s": round(block.size / best["base"] / 1e6, 1),
                     "current_mb_s": round(block.size / best["current"] / 1e6, 1),
                     "current_over_base": round(best["base"] / best["current"], 3), "same_bytes": same})
print(json.dumps(rows))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--against", default="490c103", help="git revision whose engine table 2 compares")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("bench/results_engine_exactness.json"))
    args = parser.parse_args(argv)
    builds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="emzip-builds-") as folder:
        for index, (compiler, flags) in enumerate(BUILDS):
            label = f"{compiler} {' '.join(flags)}"
            try:
                build = engine_builds.build(Path(folder) / str(index), flags, compiler)
            except engine_builds.BuildError as exc:
                builds.append({"build": label, "digest": f"skipped: {str(exc).splitlines()[0]}", "streams": 0})
                continue
            done = engine_builds.run_on(
                build, engine_builds.STREAM_DIGEST, str(GOLDEN), str(args.models), str(DATA), timeout=3600
            )
            if done.returncode != 0:
                builds.append({"build": label, "digest": f"failed: {done.stderr[-300:]}", "streams": 0})
                continue
            digest, streams = done.stdout.split()
            builds.append({"build": label, "digest": digest, "streams": int(streams)})
            print(f"{label}: {digest} over {streams} streams", flush=True)
        base = engine_builds.engine_file(
            engine_builds.build(Path(folder) / "base", engine_builds.O3, revision=args.against)
        )
        current_so = engine_builds.engine_file(engine_builds.build(Path(folder) / "current", engine_builds.O3))
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _SIDE_BY_SIDE,
                str(GOLDEN),
                str(DATA),
                str(args.rounds),
                str(base),
                str(current_so),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:])
            return 1
        speed = json.loads(done.stdout.strip().splitlines()[-1])
    digests = {b["digest"] for b in builds if not b["digest"].startswith("skipped")}
    print("| build | SHA-256 of every stream and decoded block | streams |\n|---|---|---|")
    for b in builds:
        print(f"| {b['build']} | {b['digest'][:16] if len(b['digest']) == 64 else b['digest']} | {b['streams']} |")
    print(f"\nbuilds agreeing: {'all' if len(digests) == 1 else 'NO'} ({len(digests)} distinct digests)\n")
    columns = list(speed[0]) if speed else []
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in speed:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    args.json.write_text(json.dumps({"against": args.against, "builds": builds, "speed": speed}, indent=1) + "\n")
    return 0 if len(digests) == 1 and all(r["same_bytes"] for r in speed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
