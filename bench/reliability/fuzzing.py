"""A deterministic fuzz of containers and provenance records."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import numpy as np

from bench.reliability.crafted import good_block
from bench.reliability.harness import BLOCK


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits: truncate, flip bits, overwrite, insert, or delete a run of bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("truncate", "flip", "overwrite", "insert", "delete"))
        at = rng.randrange(max(len(out), 1))
        if kind == "truncate":
            del out[at:]
        elif kind == "flip":
            if out:
                out[at] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            out[at : at + 8] = rng.randbytes(8)
        elif kind == "insert":
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            del out[at : at + rng.randint(1, 16)]
    return bytes(out)


def _mutate_json(document: Any, rng: random.Random) -> Any:
    """Replace, delete or retype one random field somewhere in a JSON document."""
    values: list[Any] = [None, True, 0, -1, 1 << 62, 1.5, "", "../x", "/abs", [], {}, [0, 0], "vol", [[0, 1]] * 3]
    doc = copy.deepcopy(document)
    section = rng.choice(("block", "volume", "encoding", "block", "volume"))
    target = doc[section] if rng.random() < 0.95 else doc
    for _ in range(rng.randint(1, 3)):
        if isinstance(target, dict) and target:
            key = rng.choice(sorted(target))
            if rng.random() < 0.4 or not isinstance(target[key], dict | list):
                if rng.random() < 0.2:
                    del target[key]
                else:
                    target[key] = rng.choice(values)
                return doc
            target = target[key]
        elif isinstance(target, list) and target:
            index = rng.randrange(len(target))
            if rng.random() < 0.5 or not isinstance(target[index], dict | list):
                target[index] = rng.choice(values)
                return doc
            target = target[index]
    return doc


def fuzz(work: Path, containers: int, records: int, seed: int = 0) -> dict[str, Any]:
    """Mutated containers through ``decompress`` and mutated records through ``validate_record``.

    A container must decode to exactly the original block or raise an ``EmzipError``; a record must
    validate (and then name a volume whose restored path lies inside the root) or raise
    ``UnsafeInputError``. Anything else is counted.
    """
    from codec import Settings, compress, decompress
    from codec.errors import EmzipError
    from flows.synthetic import em_like
    from tasks.store.names import UnsafeInputError, inside
    from tasks.store.validation import validate_record

    rng = random.Random(seed)
    block = em_like(BLOCK, seed=seed + 1)
    originals = [
        compress(block, Settings().with_overrides(steps=0)),
        compress(block, Settings().with_overrides(codec="jpegxl")),
        compress(block.astype(np.uint16) * 3, Settings()),
    ]
    sources = [block, block, block.astype(np.uint16) * 3]
    wrong, untyped, caught = 0, [], 0
    for index in range(containers):
        which = index % len(originals)
        mutated = _mutate(originals[which], rng)
        try:
            decoded = decompress(mutated)
        except EmzipError:
            caught += 1
            continue
        except Exception as exc:
            untyped.append(f"container {index}: {type(exc).__name__}: {exc}")
            continue
        if decoded.shape != sources[which].shape or not np.array_equal(decoded, sources[which]):
            wrong += 1
    inbox = work / "inbox"
    container, record, _ = good_block(inbox)
    record_path = container.with_name(container.stem + ".prov.json")
    accepted, refused = 0, 0
    for index in range(records):
        mutated_record = _mutate_json(record, rng)
        try:
            valid = validate_record(mutated_record, record_path, container)
            inside(work / "restored", f"{valid.block.volume}.zarr")
            accepted += 1
        except UnsafeInputError:
            refused += 1
        except Exception as exc:
            untyped.append(f"record {index}: {type(exc).__name__}: {exc}")
    return {
        "containers": containers,
        "containers_refused": caught,
        "records": records,
        "records_refused": refused,
        "records_accepted": accepted,
        "wrong_data": wrong,
        "untyped": untyped,
    }
