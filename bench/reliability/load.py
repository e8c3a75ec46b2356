"""Several processes claiming from thousands of blocks in one ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.reliability.harness import REPO

_CLAIMER = """
import json, sys, time
from tasks.store.ledger import Ledger, worker_identity
path, start_at = sys.argv[1], float(sys.argv[2])
worker = worker_identity()
claimed = []
with Ledger(path, timeout=120) as ledger:
    while time.time() < start_at:
        time.sleep(0.001)
    while True:
        got = ledger.claim(worker, ("discovered",), limit=1)
        if not got:
            break
        ledger.advance(got[0].block_id, worker, "encoded", release=True)
        claimed.append(got[0].block_id)
print(json.dumps(claimed))
"""


def ledger_load(work: Path, workers: int, blocks: int) -> dict[str, Any]:
    """``workers`` processes claim-and-advance ``blocks`` blocks from one ledger; counts and rate."""
    from tasks.source.grid import BlockRef
    from tasks.store.ledger import Ledger

    path = work / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.discover(BlockRef("load", z, z + 1, 0, 64, 0, 64) for z in range(blocks))
    start_at = time.time() + 3.0  # every process imported and connected before the first claim
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, str(path), str(start_at)], cwd=REPO, env=env, stdout=subprocess.PIPE
        )
        for _ in range(workers)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    seconds = time.time() - start_at
    claims = [block_id for out in outputs for block_id in json.loads(out)]
    with Ledger(path) as ledger:
        left = len(ledger.blocks(states=("discovered",)))
    return {
        "workers": workers,
        "blocks": blocks,
        "claims": len(claims),
        "double_claims": len(claims) - len(set(claims)),
        "lost": blocks - len(set(claims)),  # never claimed by anyone, all workers done
        "unclaimed_left": left,
        "per_worker": [len(json.loads(out)) for out in outputs],
        "claims_per_second": round(len(claims) / max(seconds, 1e-9), 1),
    }
