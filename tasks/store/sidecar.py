"""Where emzip keeps an image's own bookkeeping: beside the image, never inside it.

An OME-Zarr image is opened by viewers, copied by rsync and published as it is; lock files and
ledgers inside it would travel with it and show up in listings. Each image ``<dir>/<name>.zarr``
has a sibling folder ``<dir>/.<name>.zarr.emzip/`` for its metadata and pyramid locks and, for an
archive ``emzip convert`` writes, the conversion's resumable ledger.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["sidecar", "sidecar_dir"]


def sidecar_dir(image: Path) -> Path:
    """The folder beside ``image`` that holds its locks and ledger (not created)."""
    image = image if image.name not in ("", ".", "..") else image.resolve()
    return image.parent / f".{image.name}.emzip"


def sidecar(image: Path, name: str) -> Path:
    """The path of ``name`` in ``image``'s sidecar folder, the folder created if absent."""
    folder = sidecar_dir(image)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
