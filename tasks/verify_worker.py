"""``python -m tasks.verify_worker FILE``: decode a container, print sha256/shape/dtype as JSON.

Run by ``tasks.verification`` in a fresh process; exits non-zero with the error on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from codec import decompress
from codec.errors import EmzipError
from tasks.checksums import array_sha256


def main(argv: list[str]) -> int:
    """Decode ``argv[0]`` and report."""
    torch.set_num_threads(1)
    path = Path(argv[0])
    try:
        array = decompress(path.read_bytes())
    except (EmzipError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    report = {
        "sha256": array_sha256(array),
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
