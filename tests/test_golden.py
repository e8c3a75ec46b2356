"""Golden containers of real encoded bytes, decoded in every run (see tests/make_golden.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from codec import container, decompress
from codec.legacy import lattice_codec, learned
from codec.legacy.decode import architecture as _architecture
from codec.legacy.decode import decode_frozen as _decode_frozen
from codec.v4 import block as v4_block
from codec.v4 import engine, reference

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


V3_LEARNED = sorted(n for n, e in MANIFEST.items() if e["codec"] == "learned" and e["version"] == 3)
V4_LEARNED = sorted(n for n, e in MANIFEST.items() if e["codec"] == "learned" and e["version"] == 4)
OLD_LEARNED = sorted(n for n, e in MANIFEST.items() if e["codec"] == "learned" and e["version"] < 4)


def test_every_version_has_golden_files() -> None:
    versions = {e["version"] for e in MANIFEST.values()}
    assert versions == set(container.READABLE_VERSIONS)
    assert {container.unpack((GOLDEN / n).read_bytes()).version for n in MANIFEST} == versions


def _v4_job(data: bytes) -> v4_block.DecodeJob:
    parsed = container.unpack(data)
    return v4_block.parse(parsed.config, parsed.model, parsed.data, parsed.header.shape)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", V4_LEARNED)
def test_v4_golden_streams_are_reproduced_exactly_by_the_engine(name: str) -> None:
    """The stored int32 model, re-run by the engine on the decoded voxels, writes the same words."""
    data = (GOLDEN / name).read_bytes()
    job = _v4_job(data)
    block = decompress(data)
    assert engine.encode_block(block, job.model, job.family, len(job.streams)) == job.streams


@pytest.mark.parametrize("name", V4_LEARNED)
def test_v4_golden_decodes_with_the_plain_python_reference(name: str) -> None:
    """codec/v4/reference.py, written from docs/format.md alone, decodes what the engine decodes."""
    data = (GOLDEN / name).read_bytes()
    job = _v4_job(data)
    decoded = reference.decode(job.streams, job.shape, job.model, job.family)
    assert hashlib.sha256(decoded.tobytes()).hexdigest() == MANIFEST[name]["raw_sha256"]


@pytest.mark.parametrize("name", V4_LEARNED)
def test_v4_golden_first_words(name: str) -> None:
    recorded = MANIFEST[name].get("first_words")
    assert recorded is not None, "manifest lacks first_words"
    assert [int(w) for w in np.frombuffer(_v4_job((GOLDEN / name).read_bytes()).streams[0], "<u4")[:4]] == recorded


def test_v4_goldens_cover_both_families_and_several_stripes() -> None:
    jobs = [_v4_job((GOLDEN / n).read_bytes()) for n in V4_LEARNED]
    assert {j.family for j in jobs} == {"laplace", "gaussian"}
    assert all(len(j.streams) > 1 for j in jobs)


@pytest.mark.parametrize("name", V3_LEARNED)
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


def test_v3_goldens_cover_both_families() -> None:
    families = {_architecture(container.unpack((GOLDEN / n).read_bytes()).config).family for n in V3_LEARNED}
    assert families == {"laplace", "gaussian"}


@pytest.mark.parametrize("name", OLD_LEARNED)
def test_golden_first_words(name: str) -> None:
    """The first coded words of the first slice, as written when the format was frozen."""
    parsed = container.unpack((GOLDEN / name).read_bytes())
    streams = learned.unpack_streams(parsed.data, parsed.header.shape[0])
    recorded = MANIFEST[name].get("first_words")
    assert recorded is not None, "manifest lacks first_words"
    assert [int(w) for w in streams[0].words[:4]] == recorded
    assert np.all([s.words.size > 0 for s in streams])
