"""Long-lived verifying decoders: the edge's independent check without a new interpreter per block.

Each worker is ``python -m tasks.edge.verify_worker --serve`` in its own process (one torch thread,
``CUDA_VISIBLE_DEVICES`` empty, nothing shared with the encoder), started once and reused: a new
interpreter plus the torch import cost 1.5-2.3 s per block here, a request to a running worker a
few milliseconds. A worker that dies (EOF on its stdout) or hangs (no answer within the timeout)
is killed and replaced, and the block is verified again on the new worker, once; a block is never
passed because its verifier failed. The pool is per process and thread-safe.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from tasks.store.failpoints import failpoint

DEFAULT_TIMEOUT = 1800.0
#: A serving verifier's niceness (``os.nice``): 19, the lowest CPU priority, unless this says otherwise.
NICENESS_VARIABLE = "EMZIP_VERIFIER_NICE"
DEFAULT_NICENESS = 19
#: How many verifiers this process's pool runs: one per core unless this says otherwise.
COUNT_VARIABLE = "EMZIP_VERIFIERS"


def verifier_niceness() -> int:
    """The niceness verifiers start with (``EMZIP_VERIFIER_NICE``, 0-19; default 19).

    Raises ``ValueError`` naming the variable for anything else, before a worker starts (a worker
    that failed on it would only look like a verifier that died).
    """
    raw = os.environ.get(NICENESS_VARIABLE, str(DEFAULT_NICENESS)).strip()
    if not raw.isdigit() or int(raw) > 19:
        raise ValueError(f"{NICENESS_VARIABLE}={raw!r}: expected an integer from 0 to 19")
    return int(raw)


def verifier_count() -> int:
    """How many verifiers the shared pool runs (``EMZIP_VERIFIERS``; default one per CPU core).

    One per core, not fewer: they run at idle priority, so while training runs they take only the
    cycles it leaves, and once it is done (the end of a run) every core decodes the blocks still
    waiting. Each worker holds about 0.3 GB; set fewer where memory is short. Raises ``ValueError``
    naming the variable for anything but a positive integer.
    """
    raw = os.environ.get(COUNT_VARIABLE, "").strip()
    if not raw:
        return max(1, os.cpu_count() or 1)
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{COUNT_VARIABLE}={raw!r}: expected a positive integer")
    return int(raw)


__all__ = [
    "COUNT_VARIABLE",
    "DEFAULT_NICENESS",
    "NICENESS_VARIABLE",
    "VerifierFailedError",
    "VerifierPool",
    "shared_pool",
    "verifier_count",
    "verifier_niceness",
]


class VerifierFailedError(Exception):
    """The verifying process died or hung twice on the same container."""


class _Worker:
    """One ``verify_worker --serve`` process."""

    def __init__(self) -> None:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "",
            NICENESS_VARIABLE: str(verifier_niceness()),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tasks.edge.verify_worker", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, path: Path, timeout: float) -> dict[str, Any] | str:
        """The worker's answer for ``path``, or why there is none (it died, or hung past ``timeout`` s)."""
        stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        try:
            stdin.write(f"{path}\n")
            stdin.flush()
        except OSError:
            return f"pid {self.pid} died before the request (exit {self.process.wait()})"
        failpoint("verify.decoding")
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return f"pid {self.pid} hung (no answer in {timeout:g} s)"
        line = stdout.readline()
        if not line:
            return f"pid {self.pid} died (exit {self.process.wait()})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class VerifierPool:
    """Up to ``size`` verifying processes, started on demand and replaced when they fail."""

    def __init__(self, size: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.size = max(1, size)
        self.timeout = timeout
        self._idle: list[_Worker] = []
        self._started = 0
        # One condition for both ways a waiter can go on: a worker handed back (``_give_back``)
        # or a slot freed by a retired worker (``_retire``). A waiter blocked on the idle list
        # alone was never woken by a retirement and waited for ever.
        self._changed = threading.Condition()
        self.replaced = 0

    def _take(self) -> _Worker:
        with self._changed:
            while not self._idle and self._started >= self.size:
                self._changed.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1  # this slot is ours; start its worker outside the lock
        try:
            return _Worker()
        except BaseException:
            with self._changed:
                self._started -= 1
                self._changed.notify()
            raise

    def _give_back(self, worker: _Worker) -> None:
        with self._changed:
            self._idle.append(worker)
            self._changed.notify()

    def _retire(self, worker: _Worker) -> None:
        worker.stop()
        with self._changed:
            self._started -= 1
            self.replaced += 1
            self._changed.notify()

    def check(self, path: Path) -> dict[str, Any]:
        """Decode ``path`` in a pool worker: its answer (``ok``, sha256, shape, dtype, pid, threads).

        A worker that dies or hangs is replaced and the container verified again once; a second
        failure raises ``VerifierFailedError``. The answer's ``attempts`` says how many it took.
        """
        lost: list[str] = []
        for attempt in (1, 2):
            worker = self._take()
            answer = worker.ask(path, self.timeout)
            if isinstance(answer, str):
                lost.append(answer)
                self._retire(worker)
                continue
            self._give_back(worker)
            return {**answer, "attempts": attempt, "lost_verifiers": lost}
        raise VerifierFailedError(f"{path}: verifying decoder failed twice: {'; '.join(lost)}")

    def close(self) -> None:
        """Stop every idle worker (they also exit by themselves when this process ends)."""
        with self._changed:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
            self._changed.notify_all()
        for worker in idle:
            worker.stop()


_shared: VerifierPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> VerifierPool:
    """This process's pool (``verifier_count()`` workers, started as blocks need them), closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = VerifierPool(size=verifier_count())
            atexit.register(_shared.close)
        return _shared
