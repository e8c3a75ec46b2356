"""A golden ledger: a database written through every table by the ledger of 2026-12-07 (schema 4).

``fill`` drives a ledger through the public API only (both sides' transitions, a superseded
version, a batch, a refusal, pending pyramid footprints, a failed block), and ``snapshot`` reads
back everything a caller can see. ``tests/golden/ledger_schema4.sqlite`` and its snapshot
``ledger_schema4.json`` were written by the ledger as it was before it was split by concern
(commit 490c103, ``tasks/ledger.py``):

    PYTHONPATH=<checkout of 490c103>:tests python -c \\
        "from tasks.ledger import Ledger; import golden_ledger; golden_ledger.write(Ledger)"

``tests/test_ledger.py`` opens a copy with today's code and compares the snapshot, so a change to
the ledger that would misread ledgers facilities already hold fails there.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "golden"
DATABASE = GOLDEN / "ledger_schema4.sqlite"
SNAPSHOT = GOLDEN / "ledger_schema4.json"


def fill(ledger: Any, blocks: list[Any], grown: Any) -> None:
    """Drive ``ledger`` through every table with ``blocks`` (8 of volume ``vol``) and ``grown``."""
    ledger.bind_volume("vol", "a" * 64, "/acquisitions/vol")
    ledger.discover(blocks)
    first, second, third, fourth = (b.block_id for b in blocks[:4])
    ledger.claim("edge-1", limit=3)
    ledger.advance_through(first, "edge-1", ("encoded", "verified"), timings={"encode": 1.5}, raw_sha256="1" * 64)
    ledger.annotate(first, "edge-1", batch_id="batch-1", raw_stamp='{"files": []}')
    ledger.advance(first, "edge-1", "shipped", release=True, compressed_sha256="2" * 64, compressed_bytes=123)
    ledger.fail(second, "edge-1", "encode: out of memory")
    ledger.release(third, "edge-1")
    ledger.note(first, "pruned 4 raw files")
    ledger.supersede(grown, "bounds grew from z [4, 8) to [4, 10): slices 8-9 added")
    ledger.restamp(first, '{"files": [["s0000.tif", 10, 20]]}')
    ledger.open_batch("batch-1", "globus:dest", "sub-1")
    ledger.update_batch("batch-1", "succeeded", task_id="task-1", detail={"files": 1})
    ledger.retry_failed(max_attempts=5)
    ledger.receive(blocks[5], 1, compressed_sha256="3" * 64)
    ledger.receive(blocks[5], 2, compressed_sha256="4" * 64)
    ledger.refuse("inbox/vol/z0004.emz", "checksum mismatch")
    ledger.mark_pyramid("vol", ["*", "[[0, 4], [0, 16], [0, 16]]"])
    ledger.replace_pyramid("vol", "*", "[[0, 8], [0, 32], [0, 32]]")
    [claimed] = ledger.claim("edge-2", block_ids=[fourth])
    ledger.advance(claimed.block_id, "edge-2", "encoded")


def snapshot(ledger: Any, database: Path) -> dict[str, Any]:
    """Everything the ledger's public API shows, plus the database's table definitions."""
    records = []
    for record in ledger.blocks():
        row = dataclasses.asdict(record)
        row["block"] = record.block.as_json()
        records.append(row)
    connection = sqlite3.connect(database)
    try:
        tables = sorted(connection.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"))
    finally:
        connection.close()
    ids = [r.block_id for r in ledger.blocks()]
    return json.loads(
        json.dumps(
            {
                "records": records,
                "events": {block_id: ledger.events(block_id) for block_id in ids},
                "versions": {block_id: ledger.versions(block_id) for block_id in ids},
                "progress": ledger.progress(),
                "pending": [r.block_id for r in ledger.pending()],
                "failures": ledger.failures(),
                "binding": ledger.volume_binding("vol"),
                "batch": ledger.batch("batch-1"),
                "refusals": ledger.refusals(),
                "pyramid_pending": ledger.pyramid_pending(),
                "tables": [list(t) for t in tables],
            }
        )
    )


def write(ledger_class: Any) -> None:
    """Write the golden database and its snapshot with ``ledger_class`` (run once, with the old code)."""
    from tasks.grid import BlockRef, block_grid  # type: ignore[import-not-found]  # the old code's layout

    blocks = list(block_grid("vol", (8, 32, 32), (4, 16, 16)))
    grown = BlockRef("vol", 4, 10, 0, 16, 0, 16)
    DATABASE.unlink(missing_ok=True)
    with ledger_class(DATABASE) as ledger:
        fill(ledger, blocks, grown)
    with ledger_class(DATABASE) as ledger:
        SNAPSHOT.write_text(json.dumps(snapshot(ledger, DATABASE), indent=1, sort_keys=True) + "\n")
