"""The verifier pool: long-lived verifying decoders, replaced when they die, never passing a block."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from codec import Settings, compress
from flows.synthetic import em_like
from tasks.edge.verification import VerificationError, verify_container
from tasks.edge.verifier_pool import COUNT_VARIABLE, NICENESS_VARIABLE, VerifierPool, verifier_count
from tasks.store.checksums import array_sha256, file_sha256
from tasks.store.failpoints import ARMED, ENVIRONMENT, ONCE


@pytest.fixture()
def container(tmp_path: Path) -> tuple[Path, str]:
    block = em_like((4, 64, 64), seed=11)
    path = tmp_path / "block.emz"
    path.write_bytes(compress(block, Settings(steps=5)))
    return path, array_sha256(block)


def _verify(path: Path, raw: str, pool: VerifierPool) -> object:
    return verify_container(
        path, raw_sha256=raw, compressed_sha256=file_sha256(path), shape=(4, 64, 64), dtype="|u1", pool=pool
    )


def test_workers_are_reused(container: tuple[Path, str]) -> None:
    path, raw = container
    pool = VerifierPool(size=1)
    try:
        first, second = pool.check(path), pool.check(path)
        assert first["ok"] and first["sha256"] == raw and first["threads"] == 1
        assert first["niceness"] == 19  # the lowest CPU priority: it takes what training leaves idle
        if sys.platform == "linux":
            assert first["policy"] == "idle"  # SCHED_IDLE: only cores nothing else wants
        assert first["pid"] == second["pid"] and pool.replaced == 0
    finally:
        pool.close()


def test_a_verifier_killed_mid_block_is_replaced_and_the_block_verified_again(
    container: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, raw = container
    monkeypatch.setenv(ARMED, "1")
    monkeypatch.setenv(ENVIRONMENT, "verifier.decoding")
    monkeypatch.setenv(ONCE, str(tmp_path / "fired"))  # only the first worker dies
    pool = VerifierPool(size=1)
    try:
        result = _verify(path, raw, pool)
        assert result.ok  # type: ignore[attr-defined]
        assert "died" in result.process and pool.replaced == 1  # type: ignore[attr-defined]
    finally:
        pool.close()


def test_verifiers_that_keep_dying_fail_the_block(container: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    path, raw = container
    monkeypatch.setenv(ARMED, "1")
    monkeypatch.setenv(ENVIRONMENT, "verifier.decoding")  # every worker dies
    pool = VerifierPool(size=1)
    try:
        with pytest.raises(VerificationError, match="failed twice"):
            _verify(path, raw, pool)
    finally:
        pool.close()


def test_a_hung_verifier_is_replaced(container: tuple[Path, str]) -> None:
    path, raw = container
    pool = VerifierPool(size=1, timeout=0.001)  # no worker answers this fast: both attempts "hang"
    try:
        with pytest.raises(VerificationError, match="hung"):
            _verify(path, raw, pool)
        assert pool.replaced == 2
    finally:
        pool.close()


def test_a_bad_niceness_is_refused_naming_the_variable(
    container: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = container
    monkeypatch.setenv(NICENESS_VARIABLE, "lowest")
    pool = VerifierPool(size=1)
    with pytest.raises(ValueError, match="EMZIP_VERIFIER_NICE='lowest': expected an integer from 0 to 19"):
        pool.check(path)
    monkeypatch.setenv(NICENESS_VARIABLE, "5")
    try:
        assert pool.check(path)["niceness"] == 5  # the failed start was not counted: the pool still starts one
    finally:
        pool.close()


def test_the_verifier_count_is_one_per_core_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(COUNT_VARIABLE, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert verifier_count() == 6
    monkeypatch.setenv(COUNT_VARIABLE, "2")
    assert verifier_count() == 2
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv(COUNT_VARIABLE, bad)
        with pytest.raises(ValueError, match=f"EMZIP_VERIFIERS='{bad}': expected a positive integer"):
            verifier_count()


def test_a_waiter_is_not_stranded_when_the_only_verifier_dies_twice(tmp_path: Path) -> None:
    """Pool of one, every worker dies: each thread waiting for the slot must get it (not wait for ever)."""
    from bench.reliability.integrity import verifier_waiters

    outcome = verifier_waiters(tmp_path, threads=3)  # the reliability sweep's case, run here
    assert outcome["hung"] == 0, "a thread waits for a verifier for ever"
    assert (outcome["passed"], outcome["failed_typed"]) == (0, 3)


def test_failpoints_act_only_when_armed(tmp_path: Path) -> None:
    """A stray EMZIP_FAILPOINT in a facility's environment never kills a process; ``emzip`` drops it."""
    import os
    import subprocess

    script = "from tasks.store.failpoints import failpoint; failpoint('encode.train'); print('alive')"
    env = {**os.environ, ENVIRONMENT: "encode.train"}
    env.pop(ARMED, None)
    unarmed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert unarmed.returncode == 0 and "alive" in unarmed.stdout
    armed = subprocess.run(
        [sys.executable, "-c", script], env={**env, ARMED: "1"}, capture_output=True, text=True, timeout=60
    )
    assert armed.returncode == -9  # SIGKILL: the crash tests still get their kill
    cli = "import os; from flows.cli import main; from tasks.store.failpoints import failpoint\n"
    cli += "main(['info', '/nonexistent']); failpoint('encode.train'); print('alive')"
    through_cli = subprocess.run(
        [sys.executable, "-c", cli], env={**env, ARMED: "1"}, capture_output=True, text=True, timeout=60
    )
    assert through_cli.returncode == 0 and "alive" in through_cli.stdout
