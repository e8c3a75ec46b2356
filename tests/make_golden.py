"""Write the golden containers of the current format version into tests/golden/.

    python -m tests.make_golden

Run it once per format version: containers of older versions stay in tests/golden/ and in the
manifest, and are decoded in every test run, forever: a reader that can no longer decode them
has broken compatibility with data that facilities already hold.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from codec import FORMAT_VERSION, container, decompress, encode
from codec.v4 import block as v4_block
from flows.synthetic import em_like

GOLDEN = Path(__file__).resolve().parent / "golden"


def golden_inputs() -> dict[str, tuple[np.ndarray, dict[str, object], str]]:
    """Name -> (array, encode settings, expected codec) of every golden container."""
    learned_block = em_like((4, 40, 44), seed=7)
    return {
        "learned": (learned_block, {"codec": "learned", "steps": 60, "seed": 3, "family": "laplace"}, "learned"),
        "learned_gaussian": (
            learned_block,
            {"codec": "learned", "steps": 60, "seed": 3, "family": "gaussian"},
            "learned",
        ),
        "jpegxl": (em_like((3, 30, 20), seed=8).astype(np.uint16) * 257, {}, "jpegxl"),
        "lzma": (np.linspace(-1, 1, 60, dtype=np.float32).reshape(3, 4, 5), {}, "lzma"),
    }


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    manifest_path = GOLDEN / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name, (array, settings, codec) in golden_inputs().items():
        result = encode(array, **settings)  # type: ignore[arg-type]
        assert result.codec == codec, result.reason
        path = GOLDEN / f"{name}_v{FORMAT_VERSION}.emz"
        path.write_bytes(result.data)
        manifest[path.name] = {
            "codec": codec,
            "version": FORMAT_VERSION,
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "raw_sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "container_sha256": hashlib.sha256(result.data).hexdigest(),
        }
        if codec == "learned":
            parsed = container.unpack(result.data)
            job = v4_block.parse(parsed.config, parsed.model, parsed.data, parsed.header.shape)  # type: ignore[arg-type]
            manifest[path.name]["first_words"] = [int(w) for w in np.frombuffer(job.streams[0], "<u4")[:4]]
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()


#: A v4 learned container whose model has ``shift_scale`` 24, coded by the engine of 490c103
#: (``python -c "from tests.make_golden import shift24; shift24()"`` with that engine built). v4
#: writers of that time chose 24 for a model with a near-zero scale row, and that engine then
#: computed scale index 0 for every voxel; v4 keeps that meaning (docs/format.md, "shift_scale"),
#: and this file shows that such containers still decode.
SHIFT24 = "learned_shift24_v4.emz"


def shift24() -> None:
    """Write ``SHIFT24``: the ``learned_v4`` golden's block and model, its scale row made to vary."""
    import lzma

    from codec.v4 import engine

    source = container.unpack((GOLDEN / "learned_v4.emz").read_bytes())
    job = v4_block.parse(source.config, source.model, source.data, source.header.shape)  # type: ignore[arg-type]
    block = decompress((GOLDEN / "learned_v4.emz").read_bytes())
    model = job.model.copy()
    hidden = int(model[0])
    model[6] = 24  # shift_scale
    w3_scale = len(model) - (2 + model[1] + model[2] + 1) - hidden  # the scale row of W3 ends where b3 starts
    rng = np.random.default_rng(24)
    model[w3_scale : w3_scale + hidden] = rng.integers(-(1 << 14), 1 << 14, hidden)
    model[w3_scale + hidden + 1] = 5 << 24  # b3[1]: by the formula alone, indices around 5
    streams = engine.encode_block(block, model, job.family, len(job.streams))
    data = v4_block.pack_streams(streams)
    modl = lzma.compress(model.astype("<i4").tobytes(), preset=9)
    blob = container.pack(container.Container(source.header, source.config, modl, data))
    assert np.array_equal(decompress(blob), block)
    (GOLDEN / SHIFT24).write_bytes(blob)
    manifest_path = GOLDEN / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[SHIFT24] = dict(
        manifest["learned_v4.emz"],
        container_sha256=hashlib.sha256(blob).hexdigest(),
        first_words=[int(w) for w in np.frombuffer(streams[0], "<u4")[:4]],
    )
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
