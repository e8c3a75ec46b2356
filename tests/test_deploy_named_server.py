"""`emzip deploy --api-url URL` sets up the server at URL and no other, and fails in one clean line.

A real `prefect server start` runs on a free port from a PREFECT_HOME of its own; `emzip deploy`
runs with PREFECT_API_URL unset and yet another PREFECT_HOME, so nothing but `--api-url` can lead
it to that server. The test then reads the pools, the GPU limits and the deployments back from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(REPO)})
    return env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A Prefect server on a free loopback port, its own PREFECT_HOME; yields its API URL."""
    port = free_port()
    (tmp_path / "server-home").mkdir()
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=_environment(tmp_path / "server-home"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def _emzip(tmp_path: Path, *args: str, paths: bool = True) -> subprocess.CompletedProcess[str]:
    (tmp_path / "client-home").mkdir(exist_ok=True)
    env = _environment(tmp_path / "client-home")
    assert "PREFECT_API_URL" not in env
    env = {k: v for k, v in env.items() if not k.startswith("EMZIP_")}
    if paths:  # what deployments/prefect.yaml reads from the machine that applies it
        for name in ("ACQUISITION_ROOT", "OUTBOX", "DESTINATION", "INBOX", "RESTORED"):
            env[f"EMZIP_{name}"] = str(tmp_path / name.lower())
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_deploy_sets_up_the_named_server_with_prefect_api_url_unset(server: str, tmp_path: Path) -> None:
    done = _emzip(tmp_path, "deploy", "--api-url", server, "--gpus", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server}), get_client(sync_client=True) as client:
        pools = {pool.name for pool in client.read_work_pools()}
        limits = {limit.name for limit in client.read_global_concurrency_limits()}
        deployments = {d.name for d in client.read_deployments()}
    assert {"emzip-edge", "emzip-datacenter"} <= pools
    assert {"emzip-gpu-0", "emzip-gpu-1"} <= limits
    assert {"edge-acquisition", "edge-acquisition-on-write", "datacenter-restore", "flight-check"} <= deployments


def test_deploy_to_a_server_that_is_not_there_fails_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    done = _emzip(tmp_path, "deploy", "--api-url", url, "--timeout", "3")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("emzip: error:")]
    assert len(errors) == 1 and url in errors[0] and "not healthy" in errors[0], done.stderr


def test_deploy_without_the_paths_it_needs_is_refused_naming_the_parameter(server: str, tmp_path: Path) -> None:
    """An unset EMZIP_DESTINATION would make the local backend copy into the worker's folder."""
    done = _emzip(tmp_path, "deploy", "--api-url", server, paths=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("emzip: error:")]
    assert len(errors) == 1 and "transfer.destination" in errors[0] and len(errors[0]) < 400, done.stderr
