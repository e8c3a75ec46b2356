"""A verifying decoder in its own interpreter: one file per call, or a long-lived server.

``python -m tasks.verify_worker FILE`` decodes one container and prints sha256/shape/dtype as
JSON (exits non-zero with the error on stderr). ``python -m tasks.verify_worker --serve`` reads
one container path per line on stdin and answers one JSON line per path on stdout, until stdin
closes: the long-lived workers of ``tasks.verifier_pool``, which pay interpreter start-up and the
torch import once instead of per block. Either way: one torch thread, no CUDA (the caller's
environment), nothing shared with the encoder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from codec import decompress, tables
from codec.errors import EmzipError
from tasks.checksums import array_sha256
from tasks.failpoints import failpoint
from tasks.verifier_pool import DEFAULT_NICENESS, NICENESS_VARIABLE


def report(path: Path) -> dict[str, Any]:
    """Decode ``path``; what the verifier saw (raises EmzipError or OSError)."""
    array = decompress(path.read_bytes())
    return {
        "sha256": array_sha256(array),
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "niceness": os.nice(0),
    }


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
    torch.set_num_threads(1)
    if argv == ["--serve"]:
        # Lowest CPU priority: a verifying decode takes the cycles training leaves idle instead of
        # slowing it (bench.pipeline: edge 0.76x of the codec's encode at equal priority, 0.77-0.88x so).
        # The edge flow waits when MAX_VERIFYING decodes are behind, so verification never starves.
        os.nice(int(os.environ.get(NICENESS_VARIABLE, str(DEFAULT_NICENESS))))
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
