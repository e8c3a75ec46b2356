"""Acquisition identity: which acquisition a volume's blocks came from, unique to its source.

Microscopes name runs ``run1``, ``tile_0`` or a date, so a folder name says nothing about which
acquisition it holds: two folders called ``run1`` (on two disks, or one deleted and written again)
are two acquisitions. Every id that decides whether data is new, shipped or deletable therefore
carries an acquisition id:

- An acquisition folder gets an id once, in ``.emzip-acquisition.json`` inside it (a random
  UUID, created atomically: two runs starting together read the same id). The file starts with a
  dot, which no reader of the layouts takes for data. A folder written again from scratch (deleted
  and re-created) gets a new id, so its blocks are never mistaken for the old ones.
- When the folder cannot be written (a read-only mount), the id is derived from the folder's
  resolved path, device and inode (``origin`` ``"derived"``): stable while the folder exists.
- A TensorStore spec with a remote kvstore has no folder: the id is derived from its driver and
  kvstore location.

The volume id used in block ids, records, restored names and archives is ``<name>-<id[:10]>``
(``name`` being the folder name), or exactly the name an operator chose (``--name``). The edge's
ledger binds each volume id to its acquisition (``tasks.store.ledger.Ledger.bind_volume``), and the
data center keeps it in every restored target's attributes, so a second source claiming a taken
id is refused before anything is encoded, pruned or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.store.atomic import FILE_MODE, fsync_directory

ID_FILE = ".emzip-acquisition.json"
_ID = re.compile(r"^[0-9a-f]{32}$")
#: Hex digits of the acquisition id carried in a default volume id.
SUFFIX_DIGITS = 10

__all__ = ["ID_FILE", "Acquisition", "AcquisitionError", "acquisition_of", "default_volume_id"]


class AcquisitionError(Exception):
    """An acquisition's identity cannot be read or is malformed; the message names the file."""


@dataclass(frozen=True)
class Acquisition:
    """One acquisition's identity: a 32-hex-digit id, how it was obtained, and where it lives."""

    id: str
    origin: str
    """``file`` (read from or written to ``ID_FILE``), ``derived`` (path, device, inode) or ``spec``."""
    location: str

    def as_json(self) -> dict[str, str]:
        """JSON form for provenance records, ledgers and restored targets."""
        return {"id": self.id, "origin": self.origin, "location": self.location}


def default_volume_id(name: str, acquisition: Acquisition) -> str:
    """``<name>-<first SUFFIX_DIGITS hex digits of the acquisition id>``."""
    return f"{name}-{acquisition.id[:SUFFIX_DIGITS]}"


def _digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:32]


def _read_id_file(path: Path) -> str:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise AcquisitionError(f"{path}: unreadable acquisition id file ({exc}); restore it or delete it") from exc
    value = document.get("id") if isinstance(document, dict) else None
    if not isinstance(value, str) or not _ID.match(value):
        raise AcquisitionError(f"{path}: acquisition id file holds no 32-digit hex id; restore it or delete it")
    return value


def _write_id_file(path: Path) -> None:
    """Create ``path`` once with a new id; a concurrent creator wins cleanly (``FileExistsError``)."""
    document = {"id": uuid.uuid4().hex, "written_by": "emzip", "note": "identifies this acquisition; keep it"}
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")
    try:
        with temporary.open("x") as handle:
            handle.write(json.dumps(document, indent=2) + "\n")
            handle.flush()
            os.fchmod(handle.fileno(), FILE_MODE)
            os.fsync(handle.fileno())
        os.link(temporary, path)  # fails if another run created it first: never two ids
        fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _folder_acquisition(folder: Path, write: bool) -> Acquisition:
    path = folder / ID_FILE
    if not path.exists():
        try:
            if not write:
                raise PermissionError("identity is read only here")
            _write_id_file(path)
        except FileExistsError:
            pass
        except OSError:  # read-only: derive from what identifies the folder while it exists
            info = folder.stat()
            resolved = str(folder.resolve())
            return Acquisition(_digest("derived", resolved, info.st_dev, info.st_ino), "derived", resolved)
    return Acquisition(_read_id_file(path), "file", str(folder.resolve()))


def acquisition_of(location: str, spec: dict[str, Any] | None, *, write: bool = True) -> Acquisition:
    """The acquisition at ``location`` (a local folder) or described by ``spec`` (a remote store).

    A local folder gets its id file on first sight (see the module docstring) unless ``write`` is
    False (a reader that promises never to touch its source, ``emzip convert``: the id is then
    read, or derived); a spec whose kvstore is a local folder is treated as that folder.
    """
    if spec:
        kvstore = spec.get("kvstore", "")
        if isinstance(kvstore, dict) and kvstore.get("driver") == "file" and kvstore.get("path"):
            return _folder_acquisition(Path(str(kvstore["path"])), write)
        if isinstance(kvstore, str) and kvstore.startswith("file://"):
            return _folder_acquisition(Path(kvstore.removeprefix("file://")), write)
        canonical = json.dumps({"driver": spec.get("driver"), "kvstore": kvstore}, sort_keys=True)
        return Acquisition(_digest("spec", canonical), "spec", location)
    folder = Path(location)
    if not folder.is_dir():
        raise AcquisitionError(f"{folder}: acquisition folder does not exist (no identity to read or write)")
    return _folder_acquisition(folder, write)
