"""Restoring in parallel: blocks on a Dask cluster, and several restore runs on one inbox."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from bench.reliability.harness import run_flow_process, transitions
from flows.dask_workers import WORKER_PRELOAD
from flows.demo import read_restored
from flows.restore import MAX_BLOCKS_PER_TASK, default_blocks_per_task, plan_tasks, restore_flow
from flows.synthetic import em_like, write_inbox
from tasks.datacenter.restoring import limit_io_threads
from tasks.source.grid import block_grid, parse_block_id
from tasks.store.failpoints import ARMED, ENVIRONMENT, ONCE

GRID = (4, 64, 64)


def test_dask_workers_restore_an_identical_volume(prefect_api: str, tmp_path: Path) -> None:
    from prefect_dask import DaskTaskRunner

    volume = em_like((8, 64, 128), seed=12)
    inbox = tmp_path / "inbox"
    write_inbox(volume, GRID, inbox, codec={"steps": 5})
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None})
    result = restore_flow.with_options(task_runner=runner)(inbox=str(inbox), restored=str(tmp_path / "restored"))
    assert result["handled"] == 4 and result["progress"]["restored"] == 4
    np.testing.assert_array_equal(read_restored(tmp_path / "restored" / "vol.zarr"), volume)


def test_two_restore_runs_on_one_inbox_restore_each_block_once(prefect_api: str, tmp_path: Path) -> None:
    volume = em_like((12, 64, 128), seed=13)
    inbox = tmp_path / "inbox"
    write_inbox(volume, GRID, inbox, codec={"steps": 5})
    params = {"inbox": str(inbox), "restored": str(tmp_path / "restored")}
    other = threading.Thread(target=run_flow_process, args=("restore", params, None))
    other.start()  # another process on the same inbox and ledger, at the same time
    restore_flow(**params)
    other.join()
    counts = transitions(tmp_path / "restored" / "ledger.sqlite", "restored")
    assert len(counts) == 6 and set(counts.values()) == {1}, counts
    np.testing.assert_array_equal(read_restored(tmp_path / "restored" / "vol.zarr"), volume)


def test_a_dask_worker_killed_mid_block_leaves_the_volume_identical(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_dask import DaskTaskRunner

    volume = em_like((8, 64, 128), seed=14)
    inbox, restored = tmp_path / "inbox", tmp_path / "restored"
    write_inbox(volume, GRID, inbox, codec={"steps": 5})
    killed = tmp_path / "worker-killed"
    # the first worker to reach this point is SIGKILLed between writing a block and reading it back
    monkeypatch.setenv(ARMED, "1")
    monkeypatch.setenv(ENVIRONMENT, "restore.write")
    monkeypatch.setenv(ONCE, str(killed))
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None})
    restore_on_dask = restore_flow.with_options(task_runner=runner)
    first = restore_on_dask(inbox=str(inbox), restored=str(restored), blocks_per_task=1)
    assert killed.exists(), "no worker was killed: the test did not test anything"
    # Dask ran the lost task again on a live worker, in the same run: nothing failed, nothing left
    assert first["progress"]["restored"] == 4 and first["progress"]["failed"] == 0, first["progress"]
    counts = transitions(restored / "ledger.sqlite", "restored")
    assert len(counts) == 4 and set(counts.values()) == {1}, counts
    np.testing.assert_array_equal(read_restored(restored / "vol.zarr"), volume)


def test_a_block_that_fails_does_not_stop_the_others_in_its_task(prefect_api: str, tmp_path: Path) -> None:
    volume = em_like((8, 64, 128), seed=15)
    inbox, restored = tmp_path / "inbox", tmp_path / "restored"
    containers = write_inbox(volume, GRID, inbox, codec={"steps": 5})
    record_path = containers[1].with_name(containers[1].stem + ".prov.json")
    record = json.loads(record_path.read_text())
    record["encoding"]["raw_sha256"] = "0" * 64  # well formed, but not the block's voxels
    record_path.write_text(json.dumps(record))
    result = restore_flow(inbox=str(inbox), restored=str(restored), blocks_per_task=4)  # all four in one task
    assert result["progress"]["restored"] == 3 and result["progress"]["failed"] == 1, result["progress"]
    failed = [row for row in result["rows"] if row["state"] == "failed"]
    assert len(failed) == 1 and "differs from the record" in failed[0]["reason"], failed
    restored_volume = read_restored(restored / "vol.zarr")
    good = [r for r in result["rows"] if r["state"] == "restored"]
    for row in good:  # every other block of the task is in the volume, exact
        _, z, y, x = parse_block_id(row["block"])
        region = (slice(z, z + GRID[0]), slice(y, y + GRID[1]), slice(x, x + GRID[2]))
        np.testing.assert_array_equal(restored_volume[region], volume[region])


def test_restore_tasks_share_the_blocks_out_evenly_and_stay_short() -> None:
    assert default_blocks_per_task(16, workers=2) == 8  # a short run: one task per worker
    assert default_blocks_per_task(5, workers=2) == 3
    assert default_blocks_per_task(1, workers=4) == 1
    assert default_blocks_per_task(0, workers=2) == 1
    assert default_blocks_per_task(10_000, workers=2) == MAX_BLOCKS_PER_TASK  # a long run: many short tasks


def test_restore_tasks_get_equal_work_when_the_edge_blocks_are_partial() -> None:
    voxels = {b.block_id: b.voxels for b in block_grid("vol", (250, 250, 250), (32, 128, 128))}
    tasks = plan_tasks(voxels, 8)
    assert len(tasks) == 4 and all(len(task) == 8 for task in tasks)
    assert sorted(b for task in tasks for b in task) == sorted(voxels)  # every block once
    work = [sum(voxels[b] for b in task) for task in tasks]
    # consecutive ids would give the task of the last slabs (26 of 32 slices) 10% less work
    assert max(work) / min(work) < 1.01, work
    assert all(task == sorted(task) for task in tasks)
    assert plan_tasks(voxels, 100) == [sorted(voxels)]
    assert plan_tasks({}, 8) == []
    with pytest.raises(ValueError, match="at least 1"):
        plan_tasks(voxels, 0)


def _io_settings() -> dict[str, object]:
    """What a restore worker's preload set up in its process (run inside the worker)."""
    import ssl

    import prefect.client.orchestration as orchestration
    import zarr

    from tasks.datacenter import restoring

    context = restoring._io_context
    return {
        "copy_threads": None if context is None else context.spec.to_json()["data_copy_concurrency"]["limit"],
        "zarr_threads": zarr.config.get("threading.max_workers"),
        "tls_shared": orchestration.ssl is not ssl,
    }


def test_restore_workers_size_their_io_threads_to_their_task_threads() -> None:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None, preload=list(WORKER_PRELOAD)
    )
    with cluster, Client(cluster) as client:
        (settings,) = client.run(_io_settings).values()
    # as many TensorStore copy threads and zarr threads as the worker runs tasks, not one per core
    assert settings == {"copy_threads": 2, "zarr_threads": 2, "tls_shared": True}
    with pytest.raises(ValueError, match="at least 1"):
        limit_io_threads(0)
