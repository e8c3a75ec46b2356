"""The edge flow and the Prefect API: a progress bar updated every few seconds, futures asked locally."""

from __future__ import annotations

import pytest
from prefect import flow

from flows.progress import ProgressBar


def _latest(key: str) -> float:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        [artifact] = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        return float(artifact.data)  # type: ignore[arg-type]


def test_updates_within_the_interval_are_skipped_and_the_last_always_shows(prefect_api: str) -> None:
    now = [100.0]
    shown: list[bool] = []
    seen: list[float] = []

    @flow
    def run() -> None:
        bar = ProgressBar("progress-test-bar", "test", interval=5.0, clock=lambda: now[0])
        seen.append(_latest("progress-test-bar"))
        for clock, percent in ((101.0, 10.0), (104.9, 20.0), (105.0, 30.0), (106.0, 40.0), (106.5, 100.0)):
            now[0] = clock
            shown.append(bar.update(percent))
            seen.append(_latest("progress-test-bar"))

    run()
    assert shown == [False, False, True, False, True]
    assert seen == [0.0, 0.0, 0.0, 30.0, 30.0, 100.0]


def test_the_edge_flow_asks_task_futures_without_the_api(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import prefect.futures
    from prefect import task

    from flows.edge_scheduler import finished as _finished

    release = threading.Event()
    seen: list[bool] = []

    @task
    def waits() -> int:
        release.wait(timeout=30)
        return 1

    def no_api(*args: object, **kwargs: object) -> None:
        raise AssertionError("a future's state was read through the Prefect API")

    @flow
    def run() -> None:
        future = waits.submit()
        monkeypatch.setattr(prefect.futures, "get_client", no_api)
        seen.append(_finished(future))
        release.set()
        future.wait()
        seen.append(_finished(future))
        monkeypatch.undo()

    run()
    assert seen == [False, True]
