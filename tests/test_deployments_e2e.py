"""End to end through real deployments: server, bootstrap, workers, watcher, triggers.

Starts `prefect server start` on a free loopback port with its own PREFECT_HOME, applies
deployments/prefect.yaml with `emzip deploy`, starts one process worker per work pool and
`emzip watch` on an acquisition root, then plays microscope into it. The watcher's event
triggers the edge deployment, the edge flow's transfer-completed event triggers the restore
deployment, and the test waits for the restored volume. Every process is stopped by its id.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flows.demo import read_restored
from flows.synthetic import em_like, write_slice
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


class Processes:
    """Background processes started by the test, stopped (whole process groups) at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            list(command), cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def station(tmp_path: Path) -> Iterator[tuple[Processes, dict[str, Path]]]:
    port = free_port()
    paths = {
        "home": tmp_path / "prefect-home",
        "acquisitions": tmp_path / "microscope",
        "outbox": tmp_path / "edge" / "outbox",
        "inbox": tmp_path / "datacenter" / "inbox",
        "restored": tmp_path / "datacenter" / "restored",
        "logs": tmp_path / "logs",
    }
    for key in ("home", "acquisitions", "logs"):
        paths[key].mkdir(parents=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(paths["home"]),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "EMZIP_HOME": str(REPO),
        "EMZIP_ACQUISITION_ROOT": str(paths["acquisitions"]),
        "EMZIP_OUTBOX": str(paths["outbox"]),
        "EMZIP_DESTINATION": str(paths["inbox"]),
        "EMZIP_INBOX": str(paths["inbox"]),
        "EMZIP_RESTORED": str(paths["restored"]),
        "PYTHONPATH": str(REPO),
    }
    processes = Processes(env, paths["logs"])
    try:
        processes.start(
            "server", sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)
        )
        yield processes, paths
    finally:
        processes.stop()


def _restored_blocks(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM blocks WHERE state='restored'").fetchone()[0])


def test_watched_acquisition_is_restored_through_triggered_deployments(
    station: tuple[Processes, dict[str, Path]],
) -> None:
    processes, paths = station

    def bootstrap() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "flows.cli", "deploy", "--gpus", "1"]
        return subprocess.run(
            command, cwd=REPO, env=processes.env, capture_output=True, text=True, timeout=180, check=False
        )

    deploy = bootstrap()
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    again = bootstrap()  # idempotent: a second bootstrap creates nothing new
    assert again.returncode == 0 and "nothing (already in place)" in again.stdout, again.stdout + again.stderr
    for pool in ("emzip-edge", "emzip-datacenter"):
        processes.start(
            f"worker-{pool}", sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"
        )
    processes.start("watch", sys.executable, "-m", "flows.cli", "watch", str(paths["acquisitions"]), "--debounce", "1")
    time.sleep(8)  # let the watcher and the workers come up

    volume = em_like((6, 40, 40), seed=21)  # small: stored with the classic path, no training
    folder = paths["acquisitions"] / "run1"
    for z in range(volume.shape[0]):
        write_slice(folder, z, volume[z])
    time.sleep(2)
    (folder / "ACQUISITION_COMPLETE").write_text("done\n")

    deadline = time.monotonic() + 240
    ledger = paths["restored"] / "ledger.sqlite"
    while time.monotonic() < deadline and _restored_blocks(ledger) < 1:
        time.sleep(2)
    logs = {p.name: p.read_text(errors="replace")[-3000:] for p in paths["logs"].glob("*.log")}
    assert _restored_blocks(ledger) == 1, json.dumps(logs, indent=1)[-12000:]
    [restored] = paths["restored"].glob("run1-*.zarr")  # the folder's name plus its acquisition's id
    np.testing.assert_array_equal(read_restored(restored), volume)
