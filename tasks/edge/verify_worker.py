"""A verifying decoder in its own interpreter: one file per call, or a long-lived server.

``python -m tasks.edge.verify_worker FILE`` decodes one container and prints sha256/shape/dtype as
JSON (exits non-zero with the error on stderr). ``python -m tasks.edge.verify_worker --serve`` reads
one container path per line on stdin and answers one JSON line per path on stdout, until stdin
closes: the long-lived workers of ``tasks.edge.verifier_pool``, which pay interpreter start-up once
instead of per block. A v4 block decodes with numpy and the compiled engine alone, so torch is
imported only if a v1-v3 learned container comes (then with one thread: ``OMP_NUM_THREADS``). Either
way: one thread, no CUDA (the caller's environment), nothing shared with the encoder.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from codec import decompress
from codec.errors import EmzipError
from codec.v4 import tables
from tasks.edge.verifier_pool import DEFAULT_NICENESS, NICENESS_VARIABLE
from tasks.store.checksums import array_sha256
from tasks.store.failpoints import failpoint


def report(path: Path) -> dict[str, Any]:
    """Decode ``path``; what the verifier saw (raises EmzipError or OSError)."""
    array = decompress(path.read_bytes())
    return {
        "sha256": array_sha256(array),
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "pid": os.getpid(),
        "threads": _torch_threads(),
        "niceness": os.nice(0),
        "policy": scheduling_policy(),
    }


def _torch_threads() -> int:
    """torch's thread count where a v1-v3 block loaded it, else 1 (the engine decodes on one thread)."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 1


def scheduling_policy() -> str:
    """This process's CPU scheduling policy as the verifier pool reports it: ``idle`` or ``normal``."""
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) == getattr(os, "SCHED_IDLE", -1):
        return "idle"
    return "normal"


def lower_priority(niceness: int) -> None:
    """Take the CPU only where nothing else wants it: ``os.nice(niceness)``, and at 19 (the default)
    Linux's ``SCHED_IDLE`` policy where the system has it.

    At nice 19 alone a waiting verifier still gets a small share of a busy core and lets training
    wait for its time slice to end; ``SCHED_IDLE`` runs only on a core that would otherwise be idle
    and yields as soon as anything of normal priority is runnable there. Call it before torch starts
    any thread (a thread inherits both from the thread that starts it).
    """
    os.nice(niceness)
    if niceness == DEFAULT_NICENESS and hasattr(os, "SCHED_IDLE"):
        # A container that refuses it keeps nice 19 alone, still the lowest niceness.
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def serve() -> int:
    """Answer one JSON line per container path read from stdin; return when stdin closes."""
    for line in sys.stdin:
        path = Path(line.rstrip("\n"))
        failpoint("verifier.decoding")
        try:
            answer = {"ok": True, **report(path)}
        except (EmzipError, OSError) as exc:
            answer = {"ok": False, "error": f"{path}: {exc}", "pid": os.getpid()}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


def main(argv: list[str]) -> int:
    """One file, or ``--serve``."""
    os.environ["OMP_NUM_THREADS"] = "1"  # read by torch when (and only if) a v1-v3 block imports it
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if argv == ["--serve"]:
        # Lowest CPU priority: a verifying decode takes the cycles coding leaves idle instead of
        # slowing it (bench.pipeline, bench/RESULTS.md). The worker that coded the block waits for
        # its verification, so the core it leaves idle is the one the verifier gets.
        lower_priority(int(os.environ.get(NICENESS_VARIABLE, str(DEFAULT_NICENESS))))
        tables.warm()  # a long-lived verifier builds the coder's tables once, before its first block
        return serve()
    path = Path(argv[0])
    try:
        seen = report(path)
    except (EmzipError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
