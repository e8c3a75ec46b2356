"""emzip's own log lines reach the run's log in Prefect (``flows.logs``), read back from the API.

A flow run codes a block whose training fails (``emzip.codec`` says why it falls back) and ships
a batch with Globus (``emzip.transfer`` says the task was submitted; Globus answers through
``globus_sdk.testing``'s registered responses). Both lines must be in the run's log as the Prefect
UI shows it.
"""

from __future__ import annotations

import time
from pathlib import Path

import globus_sdk
import pytest
import responses
from globus_sdk.transport import RetryConfig
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.context import get_run_context

from codec import encode
from codec.v4 import train as v4_train
from flows.synthetic import em_like
from tasks.transfer import GlobusTransfer
from tests.conftest import FAST
from tests.test_transfer import SETTINGS, _batch, _register_events, _register_submit, _register_task, _task


@responses.activate
def test_codec_and_transfer_lines_reach_the_run_log(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_a: object, **_k: object) -> None:
        raise RuntimeError("loss became NaN")

    monkeypatch.setattr(v4_train, "train", explode)
    _register_submit()
    _register_task(_task("SUCCEEDED"))
    _register_events()

    @flow(name="emzip-log-lines")
    def noisy() -> str:
        encode(em_like((4, 32, 32), seed=2), codec="learned", **FAST)
        client = globus_sdk.TransferClient(
            authorizer=globus_sdk.NullAuthorizer(), retry_config=RetryConfig(max_retries=0)
        )
        GlobusTransfer(client, SETTINGS, sleep=lambda s: None).transfer(_batch(tmp_path), "sub-1")
        run = get_run_context().flow_run  # type: ignore[union-attr]
        assert run is not None
        return str(run.id)

    run_id = noisy()
    messages: list[str] = []
    for _ in range(40):  # the API log worker sends in batches, every 2 s by default
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))  # type: ignore[list-item]
        messages = [f"{log.name}: {log.message}" for log in logs]
        if any("emzip.transfer" in m for m in messages) and any("emzip.codec" in m for m in messages):
            break
        time.sleep(0.5)
    codec_lines = [m for m in messages if m.startswith("emzip.codec: learned coding failed")]
    assert codec_lines and "loss became NaN" in codec_lines[0], messages
    assert any(m.startswith("emzip.transfer: batch vol-batch-0001: Globus task") for m in messages), messages
