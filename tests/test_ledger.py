"""The SQLite block ledger: states, claims, history, and surviving killed processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tasks.source.grid import BlockRef, block_grid
from tasks.store.ledger import Ledger, LedgerError
from tests import golden_ledger

BLOCKS = list(block_grid("vol", (8, 32, 32), (4, 16, 16)))
REPO = Path(__file__).resolve().parents[1]


def test_journey_history_and_progress(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        assert ledger.discover(BLOCKS) == 8
        assert ledger.discover(BLOCKS) == 0  # idempotent
        [record] = ledger.claim("w1", limit=1)
        block_id = record.block_id
        ledger.advance(block_id, "w1", "encoded", raw_sha256="ab" * 32, raw_bytes=1024, timings={"encode_s": 2.0})
        ledger.advance(block_id, "w1", "verified", timings={"verify_s": 1.0})
        done = ledger.advance(block_id, "w1", "shipped", release=True, batch_id="b1")
        assert done.state == "shipped" and done.claimed_by is None
        assert done.timings == {"encode_s": 2.0, "verify_s": 1.0} and done.raw_bytes == 1024
        [other] = ledger.claim("w1")
        ledger.fail(other.block_id, "w1", "verification failed: sha256 mismatch")
        assert ledger.failures() == [(other.block_id, "verification failed: sha256 mismatch")]
        assert ledger.progress("vol") == {
            "discovered": 6,
            "encoded": 0,
            "verified": 0,
            "shipped": 1,
            "restored": 0,
            "failed": 1,
        }
        assert [e["to_state"] for e in ledger.events(block_id)] == ["discovered", "encoded", "verified", "shipped"]
        assert ledger.retry_failed(max_attempts=1) == 0  # it already used its one attempt
        assert ledger.retry_failed() == 1
        assert len(ledger.pending("vol")) == 7


def test_illegal_transitions_and_foreign_claims_are_refused(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.discover(BLOCKS[:1])
        [record] = ledger.claim("w1")
        with pytest.raises(LedgerError, match="cannot go from discovered to shipped"):
            ledger.advance(record.block_id, "w1", "shipped")
        with pytest.raises(LedgerError, match="not claimed by w2"):
            ledger.advance(record.block_id, "w2", "encoded")
        assert ledger.claim("w2") == []  # held by a live worker of this process
        with pytest.raises(LedgerError, match="unknown ledger fields"):
            ledger.advance(record.block_id, "w1", "encoded", password="x")


def test_two_connections_never_claim_the_same_block(tmp_path: Path) -> None:
    first, second = Ledger(tmp_path / "l.db"), Ledger(tmp_path / "l.db")
    first.discover(BLOCKS)
    got_a = {r.block_id for r in first.claim("a", limit=5)}
    got_b = {r.block_id for r in second.claim("b", limit=5)}
    assert len(got_a) == 5 and len(got_b) == 3 and not got_a & got_b
    first.close()
    second.close()


def test_expired_lease_can_be_taken_over(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.discover(BLOCKS[:1])
        ledger.claim("a", lease_seconds=0.01)
        time.sleep(0.05)
        [taken] = ledger.claim("b")
        assert taken.claimed_by == "b" and taken.attempts == 2


_CLAIM_AND_HANG = """
import sys, time
from tasks.store.ledger import Ledger
ledger = Ledger(sys.argv[1])
mode = sys.argv[2]
if mode == "claim":
    claimed = ledger.claim("doomed", limit=2)
    ledger.advance(claimed[0].block_id, "doomed", "encoded")
else:  # die inside an open write transaction
    cursor = ledger._connection.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    cursor.execute("UPDATE blocks SET state='shipped'")
print("ready", flush=True)
time.sleep(600)
"""


def _run_and_kill(db: Path, mode: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CLAIM_AND_HANG), str(db), mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_process_killed_mid_block_leaves_its_blocks_retryable(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    with Ledger(db) as ledger:
        ledger.discover(BLOCKS)
    _run_and_kill(db, "claim")
    with Ledger(db) as ledger:
        assert sum(r.claimed_by == "doomed" for r in ledger.blocks()) == 2
        taken = ledger.claim("survivor", limit=8)  # the dead process's claims are taken over
        assert len(taken) == 8
        states = {r.block_id: r.state for r in taken}
        assert sorted(states.values()).count("encoded") == 1  # its committed progress is kept
        history = ledger.events(next(b for b, s in states.items() if s == "encoded"))
        assert any("took over claim of doomed" in (e["detail"] or "") for e in history)


def test_process_killed_inside_a_transaction_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    with Ledger(db) as ledger:
        ledger.discover(BLOCKS)
    _run_and_kill(db, "transaction")
    with Ledger(db, timeout=5) as ledger:
        assert ledger.progress()["discovered"] == 8
        assert len(ledger.claim("next", limit=8)) == 8  # the lock died with the process


def _claim_one(ledger: Ledger) -> tuple[str, str]:
    [claimed] = ledger.claim("today", block_ids=["vol/z0000_y0000_x0016"])
    return claimed.block_id, "today"


_TIMES = {"at", "created", "updated", "bound", "superseded"}


def _timeless(value: object) -> object:
    """A snapshot without the wall-clock times it was taken at."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in _TIMES}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def test_a_ledger_written_before_the_split_opens_and_reads_the_same(tmp_path: Path) -> None:
    """The golden ledger (written by the one-module ledger of 490c103) reads back byte for byte."""
    copy = tmp_path / "ledger.sqlite"
    shutil.copyfile(golden_ledger.DATABASE, copy)
    with Ledger(copy) as ledger:
        assert golden_ledger.snapshot(ledger, copy) == json.loads(golden_ledger.SNAPSHOT.read_text())
        ledger.fail(*_claim_one(ledger), "kept going")  # and it goes on working with today's code
        assert ledger.retry_failed() == 1
        [claimed] = ledger.claim("today", block_ids=["vol/z0000_y0016_x0000"])
        ledger.advance(claimed.block_id, "today", "encoded", release=True)
        assert ledger.supersede(BLOCKS[0], "raw data changed") == 2
        assert [v["version"] for v in ledger.versions(BLOCKS[0].block_id)] == [1]


def test_todays_ledger_writes_what_the_golden_ledger_holds(tmp_path: Path) -> None:
    """The same calls give the same tables, records, events and versions (times aside)."""
    database = tmp_path / "today.sqlite"
    with Ledger(database) as ledger:
        golden_ledger.fill(ledger, BLOCKS, BlockRef("vol", 4, 10, 0, 16, 0, 16))
    with Ledger(database) as ledger:
        today = golden_ledger.snapshot(ledger, database)
    assert _timeless(today) == _timeless(json.loads(golden_ledger.SNAPSHOT.read_text()))
