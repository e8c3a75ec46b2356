"""Other builds of the compiled engine (codec/_engine.c), each in a folder of its own, and code run on them.

The installed engine is built by ``pip install -e .`` (-O3). To show that the source, not one
compiler's reading of it, decides every output, the tests and benchmarks build it again: under
UndefinedBehaviorSanitizer (and AddressSanitizer), at -O0, with clang. ``build`` copies the
``codec`` package into ``folder/codec`` and compiles the engine there; ``run_on`` runs Python code
in a subprocess whose ``codec`` is that copy (the repository's other packages stay importable).
Nothing here touches the installed engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: UndefinedBehaviorSanitizer, stopping at the first report (a report is a failure, never a warning).
UBSAN = ("-fsanitize=undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1")
#: AddressSanitizer and UBSan together (the runtime must load first: see ``asan_environment``).
ASAN = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1")
O0 = ("-O0",)
O3 = ("-O3",)


class BuildError(RuntimeError):
    """The engine could not be built with this compiler and these flags (the reason says why)."""


@dataclass(frozen=True)
class Build:
    """An engine built into ``folder/codec`` with ``compiler`` and ``flags``."""

    folder: Path
    compiler: str
    flags: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.compiler} {' '.join(self.flags)}"


def build(folder: Path, flags: tuple[str, ...], compiler: str = "gcc", revision: str | None = None) -> Build:
    """Copy ``codec`` into ``folder`` and compile its engine there (BuildError if it cannot be).

    ``revision``: compile the engine's C sources of that git revision instead of the working tree's
    (the copied Python package stays this tree's; for comparing engines side by side).
    """
    if shutil.which(compiler) is None:
        raise BuildError(f"{compiler} is not installed")
    target = folder / "codec"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(REPO / "codec", target, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    for name in ("_engine.c", "_engine_rows.h") if revision else ():
        shown = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:codec/{name}"], capture_output=True)
        if shown.returncode != 0:
            raise BuildError(f"codec/{name} at {revision}: {shown.stderr.decode(errors='replace').strip()}")
        (target / name).write_bytes(shown.stdout)
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    command = [
        compiler,
        "-shared",
        "-fPIC",
        "-std=c11",
        "-pthread",
        *flags,
        f"-I{sysconfig.get_paths()['include']}",
        str(target / "_engine.c"),
        "-o",
        str(target / f"_engine{suffix}"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return Build(folder, compiler, flags)


def engine_file(engine: Build) -> Path:
    """The compiled engine of a build."""
    return next((engine.folder / "codec").glob("_engine*.so"))


def asan_runtime(compiler: str = "gcc") -> str | None:
    """The AddressSanitizer runtime library of ``compiler``, or None where there is none."""
    done = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False)
    path = done.stdout.strip()
    return path if done.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def run_on(
    engine: Build, code: str, *args: str, timeout: float = 600, preload: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args`` with ``engine``'s ``codec`` first on the path.

    ``preload``: a sanitizer runtime to load before Python (AddressSanitizer must come first).
    """
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(engine.folder), str(REPO)]),
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:allocator_may_return_null=1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if preload is not None:
        environment["LD_PRELOAD"] = preload
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=engine.folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


#: Run on a build (``run_on(build, STREAM_DIGEST, golden_folder, models, data_folder)``): one SHA-256
#: over everything the engine writes and decodes: the v4 goldens re-encoded from their stored
#: models and decoded, ``models`` random models (``bench.fuzz_engine.random_model``, every field's
#: range) on random blocks, and, where ``data_folder`` holds the shared EM volumes, a 16x256x256
#: block of each coded with each golden's model. Prints the digest and how many streams it covers.
STREAM_DIGEST = """
import hashlib, random, sys
from pathlib import Path
import numpy as np
from bench import fuzz_engine
from codec import container
from codec.v4 import block as v4_block, engine
golden, models, data = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
digest, streams = hashlib.sha256(), 0
jobs = []
for name in ("learned_v4.emz", "learned_gaussian_v4.emz", "learned_shift24_v4.emz"):
    parsed = container.unpack((golden / name).read_bytes())
    jobs.append(v4_block.parse(parsed.config, parsed.model, parsed.data, parsed.header.shape))
for job in jobs:
    block = engine.decode_blocks([(job.streams, job.shape, job.model, job.family)])[0]
    for stream in engine.encode_block(block, job.model, job.family, len(job.streams)):
        digest.update(stream)
        streams += 1
    digest.update(block.tobytes())
rng = random.Random(7)
for _ in range(models):
    model = fuzz_engine.random_model(rng, True)
    shape = (rng.randint(1, 4), rng.randint(1, 40), rng.randint(1, 40))
    block = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, shape, dtype=np.uint8)
    family = rng.choice(("laplace", "gaussian"))
    try:
        coded = engine.encode_block(block, model, family, rng.randint(1, min(3, shape[1])))
    except ValueError as exc:
        digest.update(str(exc).encode())
        continue
    for stream in coded:
        digest.update(stream)
        streams += 1
    digest.update(engine.decode_blocks([(coded, shape, model, family)])[0].tobytes())
for name in ("flyem_fib_medulla_train250", "isbi2012_train"):
    path = data / f"{name}.npy"
    if not path.exists():
        continue
    volume = np.load(path, mmap_mode="r")
    block = np.ascontiguousarray(volume[:16, :256, :256], dtype=np.uint8)
    for job in jobs:
        for stream in engine.encode_block(block, job.model, job.family, 4):
            digest.update(stream)
            streams += 1
print(digest.hexdigest(), streams)
"""
