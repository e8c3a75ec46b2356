"""Regenerate the golden containers in tests/golden/ (only when the format version changes).

    python -m tests.make_golden

The containers are decoded in every test run, forever: a reader that can no longer decode
them has broken compatibility with data that facilities already hold.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from codec import FORMAT_VERSION, container, encode, learned
from flows.synthetic import em_like

GOLDEN = Path(__file__).resolve().parent / "golden"


def golden_inputs() -> dict[str, tuple[np.ndarray, dict[str, object]]]:
    """Name -> (array, encode settings) of every golden container."""
    return {
        "learned": (em_like((4, 40, 44), seed=7), {"codec": "learned", "steps": 60, "seed": 3}),
        "jpegxl": (em_like((3, 30, 20), seed=8).astype(np.uint16) * 257, {}),
        "lzma": (np.linspace(-1, 1, 60, dtype=np.float32).reshape(3, 4, 5), {}),
    }


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    manifest = {}
    for name, (array, settings) in golden_inputs().items():
        result = encode(array, **settings)  # type: ignore[arg-type]
        assert result.codec == name, result.reason
        path = GOLDEN / f"{name}_v{FORMAT_VERSION}.emz"
        path.write_bytes(result.data)
        manifest[path.name] = {
            "codec": name,
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "raw_sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "container_sha256": hashlib.sha256(result.data).hexdigest(),
        }
        if name == "learned":
            parsed = container.unpack(result.data)
            streams = learned.unpack_streams(parsed.data, array.shape[0])
            manifest[path.name]["first_words"] = [int(w) for w in streams[0].words[:4]]
    (GOLDEN / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
