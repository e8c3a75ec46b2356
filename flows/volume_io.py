"""Reading and writing whole arrays for the command line: ``.npy`` and TIFF stacks.

Bad input gets an error naming the file and the problem; outputs are written to a temporary
name in the destination folder, fsynced, then renamed, so no partial file ever carries the
final name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.store.atomic import atomic_write_bytes

TIFF_SUFFIXES = (".tif", ".tiff")


class VolumeFileError(Exception):
    """An input or output file could not be used; the message names the file and the reason."""


def read_volume(path: Path) -> np.ndarray:
    """Load a ``.npy`` array (never pickled objects) or a TIFF stack (z, y, x)."""
    if not path.is_file():
        raise VolumeFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            _check_npy_header(path)
            return np.load(path, allow_pickle=False)
        if suffix in TIFF_SUFFIXES:
            import tifffile

            return tifffile.imread(path)
    except (ValueError, OSError, EOFError) as exc:
        raise VolumeFileError(f"{path}: cannot read as {suffix} ({exc})") from exc
    raise VolumeFileError(f"{path}: unsupported input type {suffix!r} (use .npy, .tif or .tiff)")


def _check_npy_header(path: Path) -> None:
    """Refuse a ``.npy`` whose header claims more (or other) data than the file holds, before allocating."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    if dtype.hasobject:
        raise ValueError("it holds Python objects, not numbers")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = path.stat().st_size - offset
    if claimed != available:
        raise ValueError(f"its header claims {shape} {dtype} ({claimed} bytes), the file holds {available}")


def refuse_same_file(source: Path, output: Path) -> None:
    """Never write an output over its own input."""
    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise VolumeFileError(f"{output}: is the input file too; choose another output path")


def write_volume(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` or TIFF (chosen by suffix), atomically."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        import io

        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        atomic_write_bytes(path, buffer.getvalue())
    elif suffix in TIFF_SUFFIXES:
        import io

        import tifffile

        buffer = io.BytesIO()
        # A stack of grey slices, never colour planes (tifffile reads 3 or 4 slices as RGB(A) otherwise).
        tifffile.imwrite(buffer, array, photometric="minisblack")
        atomic_write_bytes(path, buffer.getvalue())
    else:
        raise VolumeFileError(f"{path}: unsupported output type {suffix!r} (use .npy, .tif or .tiff)")
