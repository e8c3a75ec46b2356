"""No silent loss (issue 31): growing acquisitions, changed slices, re-created sources, damaged deliveries.

Each case ends either with the restored volume (or archive) equal to the source as it is at the
end, or with a loud outcome: an exception or a non-empty list of missing blocks naming them. A
*silent difference* is a case that ends with neither: different voxels and nothing said. Every
case needs a Prefect API (the flows run), except the convert cases.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.reliability.harness import CODEC

SHAPE = (24, 64, 128)  # 3 x 2 blocks of 8 x 64 x 64
BLOCK = (8, 64, 64)
SHORT = 10  # slices written before the first run: block z0008 is a partial tail of 2 slices
NAME = "vol"


@dataclass
class Outcome:
    """One case: voxels that differ from the source at the end, and whether the run said so."""

    case: str
    differing_voxels: int
    loud: bool
    """The run raised, exited non-zero or listed the blocks it misses."""
    said: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def silent(self) -> bool:
        """Different data and nothing said: the failure this sweep exists for."""
        return self.differing_voxels > 0 and not self.loud


def differing(restored: np.ndarray | None, source: np.ndarray) -> int:
    """Voxels of ``source`` not equal in ``restored`` (all of them when it is absent or of another shape)."""
    if restored is None or restored.shape != source.shape:
        return int(source.size)
    return int(np.count_nonzero(restored != source))


def _volume(seed: int = 41) -> np.ndarray:
    from flows.synthetic import em_like

    return em_like(SHAPE, seed=seed)


def _write(volume: np.ndarray, folder: Path, start: int, stop: int) -> None:
    from flows.synthetic import write_slice_folder

    write_slice_folder(volume[start:stop], folder, start=start)


def _pipeline(work: Path, folder: Path, **overrides: Any) -> dict[str, Any]:
    from flows.demo import run_pipeline

    params: dict[str, Any] = {
        "layout": "slices",
        "volume_name": NAME,
        "block_shape": BLOCK,
        "codec": CODEC,
        "assume_complete": True,
        **overrides,
    }
    return run_pipeline(folder, work, **params)


def _restored(work: Path) -> np.ndarray | None:
    from flows.demo import read_restored

    path = work / "datacenter" / "restored" / f"{NAME}.zarr"
    return read_restored(path) if path.is_dir() else None


def _outcome(case: str, work: Path, source: np.ndarray, result: dict[str, Any] | None, error: str = "") -> Outcome:
    missing = result.get("missing", {}) if result else {}
    said = error or ("; ".join(f"{k}: {v}" for k, v in sorted(missing.items())) if missing else "")
    return Outcome(case, differing(_restored(work), source), bool(error or missing), said)


def growth_cli(work: Path) -> Outcome:
    """``emzip run`` (every block ready) at 10 of 24 slices, then again once all are written."""
    volume, folder = _volume(), work / "microscope" / NAME
    _write(volume, folder, 0, SHORT)
    _pipeline(work, folder)
    _write(volume, folder, SHORT, SHAPE[0])
    return _outcome("growth (emzip run)", work, volume, _pipeline(work, folder))


def growth_marker(work: Path) -> Outcome:
    """The flow with ``ACQUISITION_COMPLETE`` written at 10 slices; the acquisition is extended later."""
    from tasks.edge.readiness import DEFAULT_MARKER

    volume, folder = _volume(), work / "microscope" / NAME
    _write(volume, folder, 0, SHORT)
    (folder / DEFAULT_MARKER).write_text("")
    _pipeline(work, folder, assume_complete=False)
    _write(volume, folder, SHORT, SHAPE[0])
    return _outcome("growth (completion marker)", work, volume, _pipeline(work, folder, assume_complete=False))


def _ship_then_change(work: Path) -> tuple[Path, np.ndarray]:
    """A whole acquisition run once, then slice 5 rewritten with other pixels; (folder, the source now)."""
    volume, folder = _volume(), work / "microscope" / NAME
    _write(volume, folder, 0, SHAPE[0])
    _pipeline(work, folder)
    changed = volume.copy()
    changed[5] = _volume(seed=99)[5]
    _write(changed, folder, 5, 6)
    return folder, changed


def changed_slice(work: Path, prune_raw: str = "off") -> Outcome:
    """A slice of a shipped block is rewritten with other pixels; the next run (with ``prune_raw``)."""
    folder, changed = _ship_then_change(work)
    result = _pipeline(work, folder, **({"prune_raw": prune_raw} if prune_raw != "off" else {}))
    outcome = _outcome(f"changed slice (raw pruning {prune_raw})", work, changed, result)
    outcome.details = {"recoded": result["edge"].get("this_run", {}).get("recoded")}
    if prune_raw == "delete":  # every slice still there is the source; every slice gone was shipped as it was
        outcome.details["slices_left"] = len(list(folder.glob("*.tif")))
    return outcome


def changed_slice_refused(work: Path) -> Outcome:
    """A changed slice with ``on_changed_source="refuse"``: the run must stop, naming the slices."""
    from tasks.source.revisions import SourceChangedError

    folder, changed = _ship_then_change(work)
    try:
        result = _pipeline(work, folder, on_changed_source="refuse")
    except SourceChangedError as exc:
        return _outcome("changed slice (refused)", work, changed, None, str(exc))
    return _outcome("changed slice (refused)", work, changed, result)


class _StoppedError(Exception):
    """A convert stopped on purpose half way (as a kill would stop it)."""


def _convert(folder: Path, archive: Path, stop_after: int | None = None) -> Any:
    """``emzip convert`` of ``folder`` (stopped, as a kill would, after ``stop_after`` blocks)."""
    from codec.settings import Settings
    from tasks.datacenter.convert import convert_volume
    from tasks.source.volumes import resolve_source

    def stop(stage: str, done: int, total: int) -> None:
        if stop_after is not None and done >= stop_after:
            raise _StoppedError(f"stopped after {done} of {total} blocks")

    source = resolve_source(folder, layout="slices", write_id=False)
    return convert_volume(source, archive, Settings(steps=CODEC["steps"]), BLOCK, progress=stop)


def _archive(archive: Path) -> np.ndarray | None:
    from flows.demo import read_restored

    return read_restored(archive) if archive.is_dir() else None


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def growth_convert(work: Path) -> Outcome:
    """``emzip convert`` at 10 of 24 slices, then again at 24: level 0 and level 1 must equal the source."""
    from tasks.datacenter.pyramid import mean_pool

    volume, folder, archive = _volume(), work / "source" / NAME, work / "archive.zarr"
    _write(volume, folder, 0, SHORT)
    _convert(folder, archive)
    _write(volume, folder, SHORT, SHAPE[0])
    report = _convert(folder, archive)
    outcome = Outcome(
        "growth (emzip convert)", differing(_archive(archive), volume), bool(getattr(report, "missing", {}))
    )
    from flows.demo import read_restored

    level_one = read_restored(archive, level=1) if (archive / "1").is_dir() else None
    expected = mean_pool(volume, _factor(archive))
    outcome.details = {"level_one_differing": differing(level_one, expected), "recoded": getattr(report, "recoded", [])}
    outcome.differing_voxels += outcome.details["level_one_differing"]
    return outcome


def _factor(archive: Path) -> tuple[int, int, int]:
    import json

    held = json.loads((archive / "zarr.json").read_text())["attributes"]["emzip"]["pyramid"]["factors"]
    return tuple(held[1])  # type: ignore[return-value]


def recreated_source(work: Path) -> Outcome:
    """A convert stopped half way; the source folder is deleted and written again with other data; resumed."""
    from tasks.source.volumes import VolumeError

    folder, archive = work / "source" / NAME, work / "archive.zarr"
    _write(_volume(), folder, 0, SHAPE[0])
    with contextlib.suppress(_StoppedError):
        _convert(folder, archive, stop_after=2)
    shutil.rmtree(folder)
    other = _volume(seed=77)
    _write(other, folder, 0, SHAPE[0])
    before = _files(archive)
    try:
        report = _convert(folder, archive)
    except VolumeError as exc:
        outcome = Outcome("re-created source (convert resumed)", 0, True, str(exc))
        outcome.details = {"archive_untouched": _files(archive) == before}
        return outcome
    missing = getattr(report, "missing", {})
    return Outcome("re-created source (convert resumed)", differing(_archive(archive), other), bool(missing))


def copy_resumed(work: Path) -> Outcome:
    """A convert stopped half way; its source is copied elsewhere (new path, inode, times) and resumed from there."""
    volume, folder, archive = _volume(), work / "source" / NAME, work / "archive.zarr"
    _write(volume, folder, 0, SHAPE[0])
    with contextlib.suppress(_StoppedError):
        _convert(folder, archive, stop_after=2)
    elsewhere = work / "elsewhere" / NAME
    shutil.copytree(folder, elsewhere)
    shutil.rmtree(folder)
    try:
        report = _convert(elsewhere, archive)
    except Exception as exc:  # a refusal here is a failure of this case (a copy must resume), not silence
        return Outcome("byte-identical copy (convert resumed)", int(volume.size), True, f"{type(exc).__name__}: {exc}")
    outcome = Outcome("byte-identical copy (convert resumed)", differing(_archive(archive), volume), False)
    outcome.details = {"converted_now": report.converted, "before": report.already_done, "resumed": True}
    return outcome


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def damaged_delivery(work: Path, permanent: bool) -> Outcome:
    """A container damaged in the inbox before the restore (``permanent``: its outbox copy too)."""
    from flows.acquisition import acquisition_flow
    from flows.demo import missing_after_run
    from flows.restore import restore_flow

    volume, folder = _volume(), work / "microscope" / NAME
    _write(volume, folder, 0, SHAPE[0])
    paths = {
        "outbox": work / "edge" / "outbox",
        "inbox": work / "datacenter" / "inbox",
        "restored": work / "datacenter" / "restored",
    }
    transfer = {"kind": "local", "destination": str(paths["inbox"])}
    edge = acquisition_flow(
        acquisition=str(folder),
        outbox=str(paths["outbox"]),
        transfer=transfer,
        layout="slices",
        volume_name=NAME,
        block_shape=list(BLOCK),
        settle_seconds=0.0,
        assume_complete=True,
        codec=CODEC,
    )
    victim = sorted((paths["inbox"] / NAME).glob("*.emz"))[2]
    _damage(victim)
    if permanent:
        _damage(paths["outbox"] / NAME / victim.name)
    restored = restore_flow(
        inbox=str(paths["inbox"]),
        restored=str(paths["restored"]),
        redelivery={"outbox": str(paths["outbox"]), "transfer": transfer},
    )
    missing = missing_after_run(paths, edge)
    case = "damaged delivery (" + ("permanently damaged" if permanent else "delivered again") + ")"
    outcome = Outcome(case, differing(_restored(work), volume), bool(missing), "; ".join(sorted(missing.values())))
    outcome.details = {"incomplete_attributes": _complete_attribute(paths["restored"]), "refused": restored["refused"]}
    return outcome


def _complete_attribute(restored: Path) -> Any:
    import json

    path = restored / f"{NAME}.zarr" / "zarr.json"
    return json.loads(path.read_text())["attributes"]["emzip"].get("complete") if path.is_file() else None


CASES: dict[str, Callable[[Path], Outcome]] = {
    "growth_cli": growth_cli,
    "growth_marker": growth_marker,
    "growth_convert": growth_convert,
    "changed_slice": changed_slice,
    "changed_slice_pruned": lambda work: changed_slice(work, prune_raw="delete"),
    "changed_slice_refused": changed_slice_refused,
    "recreated_source": recreated_source,
    "copy_resumed": copy_resumed,
    "damaged_redelivered": lambda work: damaged_delivery(work, permanent=False),
    "damaged_permanent": lambda work: damaged_delivery(work, permanent=True),
}


def silent_loss_sweep(work: Path) -> list[dict[str, Any]]:
    """Every case in its own folder (needs a Prefect API); one row each."""
    rows = []
    for name, case in CASES.items():
        outcome = case(work / name)
        rows.append({**asdict(outcome), "silent": outcome.silent})
    return rows
