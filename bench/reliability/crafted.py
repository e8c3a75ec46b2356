"""Crafted inbox records beside one genuine block, through the restore flow."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.reliability.harness import BLOCK, VOLUME, restored_volume


def good_block(inbox: Path) -> tuple[Path, dict[str, Any], np.ndarray]:
    """One genuine received block (container + record) in ``inbox/vol``; (container, record, data)."""
    from flows.synthetic import em_like, write_inbox

    data = em_like(BLOCK, seed=3)
    [container] = write_inbox(data, BLOCK, inbox, name=VOLUME, codec={"steps": 0})
    record = json.loads(container.with_name(container.stem + ".prov.json").read_text())
    return container, record, data


def _crafts(record: dict[str, Any], outside: Path) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Ways a hostile or broken sender can lie in a record: label -> mutation of a copy."""

    def at(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], Any]:
        def mutate(doc: dict[str, Any]) -> Any:
            target = doc
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            return doc

        return mutate

    def volume_name(name: str) -> Callable[[dict[str, Any]], Any]:
        def mutate(doc: dict[str, Any]) -> Any:
            doc["block"]["volume"] = doc["volume"]["name"] = name
            doc["block"]["id"] = f"{name}/z0000_y0000_x0000"
            return doc

        return mutate

    return {
        "absolute volume name": volume_name(str(outside / "vol")),
        "dot-dot volume name": volume_name("../../escaped"),
        "separator in name": volume_name("a/b"),
        "leading dot name": volume_name(".hidden"),
        "newline in name": volume_name("vol\n"),
        "empty name": volume_name(""),
        "non-string name": volume_name(7),  # type: ignore[arg-type]
        "block and volume names differ": at(("volume", "name"), "other"),
        "id lies about bounds": at(("block", "id"), "vol/z0064_y0000_x0000"),
        "bounds outside volume": at(("block", "bounds"), [[0, 4], [0, 64], [0, 640]]),
        "negative bounds": at(("block", "bounds"), [[-4, 0], [0, 64], [0, 64]]),
        "bounds off the grid": at(("block", "bounds"), [[1, 4], [0, 64], [0, 64]]),
        "huge volume shape": at(("volume", "shape"), [1 << 40, 64, 64]),
        "huge block shape": at(("volume", "block_shape"), [1 << 20, 1 << 20, 1 << 20]),
        "float shape": at(("volume", "shape"), [4.0, 64, 64]),
        "bool in shape": at(("volume", "shape"), [True, 64, 64]),
        "shape not matching bounds": at(("block", "shape"), [4, 64, 65]),
        "object dtype": at(("block", "dtype"), "|O"),
        "big-endian dtype": at(("block", "dtype"), ">u2"),
        "raw_bytes lies": at(("encoding", "raw_bytes"), 1),
        "compressed_bytes zero": at(("encoding", "compressed_bytes"), 0),
        "sha256 not hex": at(("encoding", "raw_sha256"), "../" * 21 + "x"),
        "future record version": at(("record_version",), 99),
        "record is a list": lambda doc: [doc],
        "encoding missing": lambda doc: {k: v for k, v in doc.items() if k != "encoding"},
    }


def crafted_inbox(work: Path) -> dict[str, Any]:
    """Put every crafted record (and some crafted files) beside one good block; run the restore flow.

    Returns counts and the refusals: tried, written outside the root, restored, refused, left in place.
    Needs a Prefect API.
    """
    from flows.restore import restore_flow
    from tasks.store.checksums import file_sha256

    inbox = work / "datacenter" / "inbox"
    restored_root = work / "datacenter" / "restored"
    outside = work / "outside"
    outside.mkdir(parents=True)
    container, record, data = good_block(inbox)
    crafted: dict[str, Path] = {}
    for index, (label, mutate) in enumerate(_crafts(record, outside).items()):
        folder = inbox / f"c{index:02d}"
        folder.mkdir()
        shutil.copy(container, folder / container.name)
        (folder / container.name.replace(".emz", ".prov.json")).write_text(json.dumps(mutate(copy.deepcopy(record))))
        crafted[label] = folder / container.name
    # files whose names, not contents, are the attack
    escape = inbox / "link-out"
    escape.symlink_to(outside, target_is_directory=True)
    shutil.copy(container, outside / container.name)
    (outside / container.name.replace(".emz", ".prov.json")).write_text(json.dumps(record))
    crafted["folder symlinked out of the inbox"] = escape / container.name
    linked = inbox / "linked"
    linked.mkdir()
    (linked / container.name).symlink_to(outside / container.name)
    shutil.copy(inbox / VOLUME / container.name.replace(".emz", ".prov.json"), linked)
    crafted["container symlinked out of the inbox"] = linked / container.name
    renamed = inbox / "vol2"
    renamed.mkdir()
    shutil.copy(container, renamed / container.name)
    shutil.copy(inbox / VOLUME / container.name.replace(".emz", ".prov.json"), renamed)
    crafted["record for another volume's folder"] = renamed / container.name
    hidden = inbox / ".hidden"
    hidden.mkdir()
    shutil.copy(container, hidden / container.name)
    hidden_record = copy.deepcopy(record)
    _crafts(record, outside)["leading dot name"](hidden_record)
    (hidden / container.name.replace(".emz", ".prov.json")).write_text(json.dumps(hidden_record))
    crafted["dot folder with matching record"] = hidden / container.name
    before = {p: file_sha256(p) for p in crafted.values() if p.exists()}

    result = restore_flow(inbox=str(inbox), restored=str(restored_root))

    outside_files = sorted(str(p) for p in outside.rglob("*") if p.is_file() and p.suffix not in (".emz", ".json"))
    escaped = [str(p) for p in work.parent.glob("escaped*")] + [
        str(p) for p in work.rglob("*.zarr") if not p.resolve().is_relative_to(restored_root.resolve())
    ]
    volumes = sorted(p.name for p in restored_root.glob("*.zarr"))
    refused = result["refused"]
    left = sum(1 for p, digest in before.items() if p.exists() and file_sha256(p) == digest)
    restored = restored_volume(work)
    return {
        "tried": len(crafted),
        "outside_root": len(outside_files) + len(escaped),
        "restored_crafted": len([v for v in volumes if v != f"{VOLUME}.zarr"]) + (result["handled"] - 1),
        "refused": sum(1 for p in crafted.values() if str(p) in refused),
        "left_in_place": left,
        "good_restored": restored is not None and bool(np.array_equal(restored, data)),
        "not_refused": sorted(label for label, p in crafted.items() if str(p) not in refused),
        "reasons": {label: refused.get(str(p), "") for label, p in crafted.items()},
    }
