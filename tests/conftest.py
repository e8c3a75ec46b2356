"""Shared fixtures: real EM data from ../shared (skipped when absent) and generated volumes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flows.synthetic import em_like

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Small budgets keep the suite fast; the benchmark measures real settings.
FAST = {"steps": 40}


def free_port() -> int:
    """A loopback TCP port free right now (for a Prefect server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shared_volume(name: str) -> np.ndarray:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"real EM data {path} is absent (a fresh clone has no ../shared): test skipped")
    return np.load(path, mmap_mode="r")


@pytest.fixture(scope="session")
def flyem() -> np.ndarray:
    return shared_volume("flyem_fib_medulla_train250.npy")


@pytest.fixture(scope="session")
def isbi() -> np.ndarray:
    return shared_volume("isbi2012_train.npy")


@pytest.fixture(scope="session")
def em_block() -> np.ndarray:
    return em_like((6, 48, 52), seed=1)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect test server for the whole session (about 17 s to start); yields its API URL."""
    import os

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # its heartbeat races SQLite
    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())
