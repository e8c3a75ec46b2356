"""What starting a reader, a verifier or a worker costs: import times, this tree beside an earlier one.

    python -m bench.import_times [--against 490c103] [--runs 5]

Each module is imported in a fresh interpreter ``--runs`` times, alternating between the two trees,
and the best time is kept (``time.perf_counter`` around the import; ``python -X importtime`` names
what the time goes to). The earlier tree is a ``git worktree`` of ``--against`` with this tree's
compiled engine copied in (the engine's source is the same for these modules' purposes: import
time). Module names moved by issue 32 are mapped (``tasks.verify_worker`` was
``tasks.edge.verify_worker``'s name, ``tasks.dask_preload`` ``flows.dask_preload``'s).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: (what it is, module now, module in the earlier tree)
MODULES = (
    ("a reader: `import codec`", "codec", "codec"),
    ("zarr-python's codec entry point", "codec.zarr_codec", "codec.zarr_codec"),
    ("a verifier worker", "tasks.edge.verify_worker", "tasks.verify_worker"),
    ("a Dask restore worker's preload", "flows.dask_preload", "tasks.dask_preload"),
    ("the restore flow", "flows.restore", "flows.restore"),
    ("an edge worker: the acquisition flow", "flows.acquisition", "flows.acquisition"),
)
_TIMED = """
import sys, time
sys.path.insert(0, sys.argv[1])
began = time.perf_counter()
__import__(sys.argv[2])
seconds = time.perf_counter() - began
assert sys.modules["codec"].__file__.startswith(sys.argv[1]), sys.modules["codec"].__file__
print(seconds, "torch" in sys.modules)
"""


def _time(tree: Path, module: str) -> tuple[float, bool]:
    done = subprocess.run(
        [sys.executable, "-c", _TIMED, str(tree), module], cwd=tree, capture_output=True, text=True, check=True
    )
    seconds, torch = done.stdout.split()
    return float(seconds), torch == "True"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", default="490c103")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="emzip-imports-") as folder:
        base = Path(folder) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.against],
                       check=True, capture_output=True)  # fmt: skip
        try:
            for engine in (REPO / "codec").glob("_engine*.so"):
                shutil.copy(engine, base / "codec" / engine.name)
            print(f"| what | module | {args.against} s (torch loaded) | now s (torch loaded) | now / before |")
            print("|---|---|---|---|---|")
            for label, now_module, base_module in MODULES:
                best = {"base": (float("inf"), False), "now": (float("inf"), False)}
                for _ in range(args.runs):
                    for key, tree, module in (("base", base, base_module), ("now", REPO, now_module)):
                        seconds, torch = _time(tree, module)
                        best[key] = min(best[key], (seconds, torch))
                (b, bt), (n, nt) = best["base"], best["now"]
                print(f"| {label} | `{now_module}` | {b:.3f} ({'yes' if bt else 'no'}) | "
                      f"{n:.3f} ({'yes' if nt else 'no'}) | {n / b:.2f} |", flush=True)  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
