"""Golden containers of real encoded bytes, decoded in every run (see tests/make_golden.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from codec import container, decompress, lattice_codec, learned
from codec.api import _architecture, _decode_frozen

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_file_decodes_to_recorded_array(name: str) -> None:
    entry = MANIFEST[name]
    data = (GOLDEN / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["container_sha256"], "golden file itself changed"
    array = decompress(data)
    assert array.dtype.str == entry["dtype"]
    assert list(array.shape) == entry["shape"]
    assert hashlib.sha256(array.tobytes()).hexdigest() == entry["raw_sha256"]


CURRENT_LEARNED = sorted(
    n for n, e in MANIFEST.items() if e["codec"] == "learned" and e["version"] == container.FORMAT_VERSION
)
ALL_LEARNED = sorted(n for n, e in MANIFEST.items() if e["codec"] == "learned")


def test_every_version_has_golden_files() -> None:
    versions = {e["version"] for e in MANIFEST.values()}
    assert versions == set(container.READABLE_VERSIONS)
    assert {container.unpack((GOLDEN / n).read_bytes()).version for n in MANIFEST} == versions


@pytest.mark.parametrize("name", CURRENT_LEARNED)
def test_golden_learned_streams_are_reproduced_exactly(name: str) -> None:
    """The stored model, re-run here on the decoded voxels, writes the very same words.

    This pins the exact float32 inference, the window tables and the entropy coder across
    machines and releases, the way constriction's own tests pin its compressed words.
    """
    data = (GOLDEN / name).read_bytes()
    parsed = container.unpack(data)
    model = _decode_frozen(_architecture(parsed.config), parsed.model)
    block = decompress(data)
    assert learned.pack_streams(lattice_codec.encode_block(model, block)) == parsed.data


def test_current_goldens_cover_both_families() -> None:
    families = {_architecture(container.unpack((GOLDEN / n).read_bytes()).config).family for n in CURRENT_LEARNED}
    assert families == {"laplace", "gaussian"}


@pytest.mark.parametrize("name", ALL_LEARNED)
def test_golden_first_words(name: str) -> None:
    """The first coded words of the first slice, as written when the format was frozen."""
    parsed = container.unpack((GOLDEN / name).read_bytes())
    streams = learned.unpack_streams(parsed.data, parsed.header.shape[0])
    recorded = MANIFEST[name].get("first_words")
    assert recorded is not None, "manifest lacks first_words"
    assert [int(w) for w in streams[0].words[:4]] == recorded
    assert np.all([s.words.size > 0 for s in streams])
