"""``python -m bench.reliability [--full]``: every sweep, and the table of docs/operations.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.reliability.bombs import bomb_sweep
from bench.reliability.crafted import crafted_inbox
from bench.reliability.disks import SITES, can_mount_small_filesystem, out_of_space_site
from bench.reliability.fuzzing import fuzz
from bench.reliability.harness import write_acquisition
from bench.reliability.integrity import (
    convert_killed_between_steps,
    crafted_targets,
    same_name_acquisitions,
    verifier_waiters,
)
from bench.reliability.kills import SAMPLE_POINTS, kill_point
from bench.reliability.load import ledger_load
from bench.reliability.silent import silent_loss_sweep
from bench.reliability.workers import WORKER_FAULTS, worker_fault


def _table(results: dict[str, Any]) -> str:
    crafted, kills, disks, load, fuzzed = (
        results["crafted"],
        results["kills"],
        results["disks"],
        results["load"],
        results["fuzz"],
    )
    rows = [
        "| sweep | tried | failures |",
        "|---|---|---|",
        f"| crafted inbox records | {crafted['tried']} | written outside the root {crafted['outside_root']}, "
        f"restored {crafted['restored_crafted']}, not refused {len(crafted['not_refused'])}, "
        f"left in place {crafted['left_in_place']}/{crafted['tried']} |",
        f"| kill -9 points (edge and restore) | {len(kills)} killed and resumed "
        f"({sum(k['killed'] for k in kills)} killed at the point) | "
        f"blocks lost {sum(k['lost'] for k in kills)}, shipped twice {sum(k['shipped_twice'] for k in kills)}, "
        f"restored twice {sum(k['restored_twice'] for k in kills)}, "
        f"not identical {sum(not k['identical'] for k in kills)}, "
        f"inbox not one file per block {sum(not k['destination_agrees'] for k in kills)}, "
        f"temporary files left {sum(len(k['temporaries']) for k in kills)}, "
        f"pruned before confirmed {sum(len(k['pruned_early']) for k in kills)} |",
    ]
    if disks is None:
        rows.append("| full disks (ENOSPC) | not run: this machine does not allow mounting a small tmpfs | |")
    else:
        rows.append(
            f"| full disks (ENOSPC) | {len(disks)} sites | blocks lost {sum(d['lost'] for d in disks)}, "
            f"partial files left {sum(len(d['partial_files']) for d in disks)}, "
            f"blocks marked failed {sum(d['marked_failed'] for d in disks)}, "
            f"errors not naming path and cause {sum(not d['names_path'] for d in disks)}, "
            f"not completed after freeing {sum(not d['completed_after_freeing'] for d in disks)} |"
        )
    rows += [
        f"| ledger load | {load['workers']} processes x {load['blocks']} blocks | "
        f"double claims {load['double_claims']}, lost {load['lost']}; {load['claims_per_second']} claims/s |",
        f"| fuzz | {fuzzed['containers']} containers, {fuzzed['records']} records | "
        f"wrong data {fuzzed['wrong_data']}, untyped exceptions {len(fuzzed['untyped'])} |",
    ]
    same, targets, bombs = results["same_name"], results["targets"], results["bombs"]
    convert, waiters = results["convert_kill"], results["verifier_waiters"]
    rows += [
        f"| two acquisitions in folders called `run1`, one edge (raw pruning on) and one data center | 2 | "
        f"lost {same['lost']}, volume ids shared {0 if same['distinct_ids'] else 1} |",
        f"| records disagreeing with a restored volume (another grid, dtype, acquisition) beside another "
        f"volume's block | {targets['tried']} | overwritten voxels {targets['overwritten_voxels']}, "
        f"not refused alone {targets['tried'] - targets['refused_alone']}, "
        f"other volume held up {0 if targets['other_volume_restored'] else 1} |",
        f"| decompression bombs and malformed CONF (valid CRCs), each in a new process | {len(bombs)} | "
        f"not refused {sum(not b['refused'] for b in bombs)}, untyped {sum(not b['typed'] for b in bombs)}, "
        f"over 1 s {sum(b['seconds'] >= 1 for b in bombs)}, over 100 MB "
        f"{sum(b['peak_mb_above_baseline'] >= 100 for b in bombs)}; slowest "
        f"{max(b['seconds'] for b in bombs):.3f} s, largest {max(b['peak_mb_above_baseline'] for b in bombs):.1f} MB |",
        f"| a verifier dying twice with blocks waiting for it | {waiters['waiters']} waiters | "
        f"hung {waiters['hung']}, passed without a verification {waiters['passed']} |",
        f"| `emzip convert` killed between placing a chunk and recording it, resumed | 1 | "
        f"not killed {0 if convert['killed'] else 1}, resume failed {0 if convert['resumed'] else 1}, "
        f"archive not identical {0 if convert['identical'] else 1} |",
    ]
    rows += [
        f"| {row['case']}, then the runs after it (2 Dask workers) | 1 | "
        f"fault not happened {int(not row['fired'])}, blocks lost {row['lost']}, "
        f"shipped twice {row['shipped_twice']}, restored twice {row['restored_twice']}, "
        f"coded again as a new version {row['recoded_as_new_version']}, failed {row['failed_blocks']}, "
        f"not identical {int(not row['identical'])}, inbox containers {row['inbox_files']}/{row['blocks']} |"
        for row in results["workers"]
    ]
    rows += [
        f"| {row['case']} | 1 | silent differences {int(row['silent'])} (voxels differing at the end "
        f"{row['differing_voxels']}, {'said so: ' + _short(row['said']) if row['loud'] else 'nothing said'}) |"
        for row in results["silent_loss"]
    ]
    return "\n".join(rows)


def _short(text: str, limit: int = 140) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_all(work: Path, full: bool) -> dict[str, Any]:
    """Every sweep (``full``: every kill point and more load and fuzz) under a Prefect test server."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from tasks.store.failpoints import POINTS

    template, volume = write_acquisition(work / "template")
    results: dict[str, Any] = {}
    with prefect_test_harness(server_startup_timeout=120):
        results["crafted"] = crafted_inbox(work / "crafted")
        results["same_name"] = same_name_acquisitions(work / "same-name")
        results["silent_loss"] = silent_loss_sweep(work / "silent-loss")
        results["targets"] = crafted_targets(work / "targets")
        points = POINTS if full else SAMPLE_POINTS
        results["kills"] = [asdict(kill_point(work / f"kill-{p}", template, volume, p)) for p in points]
        results["workers"] = [asdict(worker_fault(work / f"workers-{i}", c)) for i, c in enumerate(WORKER_FAULTS)]
        if can_mount_small_filesystem():
            results["disks"] = [
                asdict(out_of_space_site(work / f"disk-{i}", template, volume, s)) for i, s in enumerate(SITES)
            ]
        else:
            results["disks"] = None
    results["bombs"] = [asdict(b) for b in bomb_sweep(work / "bombs")]
    results["verifier_waiters"] = verifier_waiters(work / "waiters")
    results["convert_kill"] = convert_killed_between_steps(work / "convert-kill")
    results["load"] = ledger_load(work / "load", 4, 4000 if full else 1000)
    results["fuzz"] = fuzz(work / "fuzz", 3000 if full else 300, 3000 if full else 300)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.reliability [--full] [--out DIR]``: run the sweeps, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every kill point, 4000 blocks of load, 3000 fuzz cases")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="where results_reliability.json goes")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="emzip-reliability-") as scratch:
        results = run_all(Path(scratch), args.full)
    results["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results_reliability.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(_table(results))
    print(f"\n{results['seconds']} s; details in {args.out / 'results_reliability.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
