"""Per-block fixed cost of the edge's separate verification: pool worker against a new interpreter.

``python -m bench.verifier`` verifies one small container (2x32x32: its decode takes
milliseconds, so what is measured is the fixed cost) many times through ``tasks.edge.verifier_pool``
and, for comparison, a few times the way the edge did before the pool (a new
``python -m tasks.edge.verify_worker FILE`` per block), and the in-process decode of the same
container. Prints medians in seconds; overhead = verification minus the in-process decode.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from codec import Settings, compress, decompress
from flows.synthetic import em_like
from tasks.edge.verifier_pool import VerifierPool


def _median_seconds(run: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    """Print the table."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "small.emz"
        path.write_bytes(compress(em_like((2, 32, 32), seed=1), Settings(steps=0)))
        data = path.read_bytes()
        decode = _median_seconds(lambda: decompress(data), 50)
        pool = VerifierPool(size=1)
        try:
            pool.check(path)  # start-up, paid once per worker
            pooled = _median_seconds(lambda: pool.check(path), 50)
        finally:
            pool.close()
        command = [sys.executable, "-m", "tasks.edge.verify_worker", str(path)]
        fresh = _median_seconds(lambda: subprocess.run(command, capture_output=True, check=True), 5)
    print("| verification of one small block | median s | overhead over the in-process decode s |")
    print("|---|---|---|")
    print(f"| in-process decode (no separate process) | {decode:.4f} | 0 |")
    print(f"| verifier pool worker (long-lived) | {pooled:.4f} | {pooled - decode:.4f} |")
    print(f"| new interpreter per block (before the pool) | {fresh:.3f} | {fresh - decode:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
