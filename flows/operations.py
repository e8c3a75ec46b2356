"""Running emzip as a service: ``emzip deploy`` (bootstrap a server) and ``emzip serve``.

``deploy`` waits for the server's health endpoint, creates the process work pools and one global
concurrency limit per GPU (``emzip-gpu-<i>``, limit 1: two encodes never share a card), then
applies ``deployments/prefect.yaml``. Every step talks to the server it was given and no other:
the client calls run under ``temporary_settings`` with that URL (without them, an unset
``PREFECT_API_URL`` makes Prefect start an ephemeral local server and set that one up), and the
health check goes through Prefect's client, so its TLS settings apply. Every step is idempotent:
running it again changes nothing that is already right. ``serve`` runs the same deployments
(schedules and triggers) from this process, for a single workstation without a separate worker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flows.events import ACQUISITION_WRITTEN, TRANSFER_COMPLETED, VOLUME_RESOURCE_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
EDGE_POOL = "emzip-edge"
DATACENTER_POOL = "emzip-datacenter"


class DeployError(RuntimeError):
    """Setting up the named server failed; the message names the server and the cause."""


def _on_server(api_url: str) -> Any:
    """Prefect settings that point every client call of this process at ``api_url`` only."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: api_url})


def wait_for_health(api_url: str, timeout: float = 120.0) -> None:
    """Ask the server at ``api_url`` for its health through Prefect's client until it answers
    (TLS settings included), or raise DeployError naming the URL and the last cause."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    last = "no answer"
    with _on_server(api_url):
        while time.monotonic() < deadline:
            try:
                with get_client(sync_client=True) as client:
                    problem = client.api_healthcheck()
            except Exception as exc:  # refused, TLS, a proxy's error page: try again until the deadline
                problem = exc
            if problem is None:
                return
            last = f"{type(problem).__name__}: {problem}"[:300]
            time.sleep(1)
    raise DeployError(f"Prefect server at {api_url} not healthy after {timeout:.0f} s ({last})")


def ensure_pools_and_limits(gpus: int, api_url: str) -> list[str]:
    """Create the work pools and per-GPU concurrency limits missing on ``api_url``; returns what it created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    created = []
    with _on_server(api_url), get_client(sync_client=True) as client:
        for pool in (EDGE_POOL, DATACENTER_POOL):
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                try:
                    client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
                    created.append(f"work pool {pool}")
                except ObjectAlreadyExists:
                    pass
        for index in range(gpus):
            name = f"emzip-gpu-{index}"
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                created.append(f"concurrency limit {name}")
    return created


def deploy(api_url: str, gpus: int = 1, prefect_file: Path = PREFECT_FILE, timeout: float = 120.0) -> list[str]:
    """Bootstrap the server at ``api_url``: health, pools, limits, then ``prefect deploy --all``
    (idempotent). DeployError names the server and the cause of any failure."""
    wait_for_health(api_url, timeout)
    try:
        created = ensure_pools_and_limits(gpus, api_url)
    except Exception as exc:  # the client's errors (HTTP, TLS, refused): one line naming the server
        raise DeployError(f"Prefect server at {api_url}: creating pools and limits failed: {exc}") from exc
    env = {**os.environ, "PREFECT_API_URL": api_url}
    env.setdefault("EMZIP_HOME", str(REPO_ROOT))
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise DeployError(f"Prefect server at {api_url}: prefect deploy failed: {_deploy_cause(completed)}")
    return created


def _deploy_cause(completed: subprocess.CompletedProcess[str]) -> str:
    """The one line that says why ``prefect deploy`` failed: the server's validation message where
    there is one (a deployment parameter its schema refuses), else the last line, shortened."""
    output = completed.stdout + completed.stderr
    found = re.search(r"Validation failed for field [^\"}]*", output)
    if found:
        return found.group(0).strip()
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def serve_all(
    acquisition_root: str, outbox: str, destination: str, inbox: str, restored: str, interval: float = 300.0
) -> None:
    """Serve the edge, restore and flight-check deployments from this process (``prefect.serve``)."""
    from prefect import serve
    from prefect.events import DeploymentEventTrigger

    from flows.edge import edge_scan_flow
    from flows.flight_check import flight_check_flow
    from flows.restore import restore_flow

    transfer: dict[str, Any] = {"kind": "local", "destination": destination}
    edge_parameters = {"acquisition_root": acquisition_root, "outbox": outbox, "transfer": transfer}
    volume_match: dict[str, str | list[str]] = {"prefect.resource.id": f"{VOLUME_RESOURCE_PREFIX}*"}
    edge: Any = edge_scan_flow.to_deployment(
        "edge-acquisition",
        interval=interval,
        parameters=edge_parameters,
        concurrency_limit=1,
        triggers=[
            DeploymentEventTrigger(
                match=volume_match,
                expect={ACQUISITION_WRITTEN},
                parameters={"only_volume": "{{ event.payload.volume }}"},
            )
        ],
    )
    restore: Any = restore_flow.to_deployment(
        "datacenter-restore",
        interval=3 * interval,
        parameters={"inbox": inbox, "restored": restored},
        concurrency_limit=1,
        triggers=[DeploymentEventTrigger(match=volume_match, expect={TRANSFER_COMPLETED})],
    )
    flight: Any = flight_check_flow.to_deployment("flight-check", cron="0 6 * * *", parameters={"transfer": transfer})
    serve(edge, restore, flight)
