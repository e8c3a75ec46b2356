"""Decoding needs numpy and the compiled engine, not torch: a reader, a verifier or a restore worker
starts in a fraction of a second and runs where torch is not installed.

The check runs in a subprocess whose import system refuses ``torch`` (as on a machine without it):
every v4 golden decodes, and an emzip archive reads back through zarr-python.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr

from flows.synthetic import em_like

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"

#: Run with torch unimportable: decode the v4 goldens and read an archive; print what was seen.
_WITHOUT_TORCH = """
import hashlib, json, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (made unimportable by the test)")
sys.meta_path.insert(0, NoTorch())
import numpy as np
import zarr
from codec import decompress
import tasks.edge.verify_worker  # the verifier's own module loads too
import flows.dask_preload  # and the Dask restore worker's preload
golden = json.loads(sys.argv[1])
seen = {name: hashlib.sha256(decompress(open(path, "rb").read()).tobytes()).hexdigest()
        for name, path in golden.items()}
archive = zarr.open_array(sys.argv[2], mode="r")[:]
seen["archive"] = hashlib.sha256(np.ascontiguousarray(archive).tobytes()).hexdigest()
seen["torch loaded"] = "torch" in sys.modules
print(json.dumps(seen))
"""


def test_v4_goldens_and_an_archive_decode_with_torch_unimportable(tmp_path: Path) -> None:
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    v4 = {name: str(GOLDEN / name) for name, entry in manifest.items() if entry["version"] == 4}
    assert len(v4) >= 4
    volume = em_like((6, 40, 48), seed=21)
    array = zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=volume.shape,
        chunks=(4, 32, 32),
        dtype=volume.dtype,
        serializer={"name": "emzip", "configuration": {"settings": {"steps": 5, "codec": "learned"}}},
        compressors=None,
    )
    array[:] = volume
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH, json.dumps(v4), str(tmp_path / "a.zarr")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen.pop("torch loaded") is False
    assert seen.pop("archive") == hashlib.sha256(np.ascontiguousarray(volume).tobytes()).hexdigest()
    assert seen == {name: manifest[name]["raw_sha256"] for name in v4}
