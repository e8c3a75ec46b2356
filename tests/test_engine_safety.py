"""The compiled engine on hostile input: typed errors only, work bounded by the payload, no undefined
behaviour, and the same bytes from every build.

Each finding of issue 33 (``bench.fuzz_engine.issue_cases``) runs in a subprocess, because on the
engine before the fix some of them killed the process (SIGSEGV, SIGFPE) and a test must fail, not
take the suite down with it. The sanitizer and -O0/-O3 tests build the engine again into a
temporary folder (``bench.engine_builds``) and skip, saying why, where no compiler can.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import codec._engine as compiled
from bench import engine_builds, fuzz_engine
from codec import CorruptDataError, container, decompress
from codec.limits import LimitError
from codec.v4 import block as v4_block
from codec.v4 import engine, reference
from codec.v4.freeze import BoundError, check_bounds, unpack

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"

_RUN_ISSUE_CASES = """
import json
from bench import fuzz_engine
from codec.errors import EmzipError
from codec.limits import LimitError
for name, call in fuzz_engine.issue_cases():
    print(json.dumps({"name": name, "started": True}), flush=True)
    try:
        call()
        outcome, error = "accepted", ""
    except (EmzipError, ValueError, TypeError) as exc:
        outcome, error = ("limit" if isinstance(exc, LimitError) else "typed"), f"{type(exc).__name__}: {exc}"
    except BaseException as exc:
        outcome, error = "untyped", f"{type(exc).__name__}: {exc}"
    print(json.dumps({"name": name, "outcome": outcome, "error": error}), flush=True)
"""


@pytest.fixture(scope="module")
def issue_outcomes() -> dict[str, dict[str, str]]:
    """How each case of issue 33 ended, run in a subprocess on the installed engine."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN_ISSUE_CASES], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    outcomes: dict[str, dict[str, str]] = {}
    for line in done.stdout.splitlines():
        entry = json.loads(line)
        outcomes[entry["name"]] = entry if "outcome" in entry else {"outcome": f"killed ({done.returncode})"}
    return outcomes


def _names(prefix: str) -> list[str]:
    return [name for name in _ISSUE_NAMES if name.startswith(prefix)]


_ISSUE_NAMES = [
    "2: HEAD (1, 2**21), hidden 64",
    "2: HEAD (1, 2**23), hidden 8",
    "2: HEAD (1, 2**26)",
    "3: 256M voxels at the density floor",
    "4: HEAD (0, 2**40, 64)",
    "4: HEAD (0, 2**63, 64)",
    "4: HEAD (1, 1, 2**31)",
    "4: HEAD (1, 1, 2**31 - 1)",
    "1: model sums over 2**30, engine called directly",
    "5: invalid cum and lut, right size",
    "5: zero frequencies in encode_stripe",
    "5: a list where a tuple is expected",
    "6: junk after MODL's xz stream",
]


def test_every_case_of_the_issue_is_run(issue_outcomes: dict[str, dict[str, str]]) -> None:
    assert set(issue_outcomes) == set(_ISSUE_NAMES), issue_outcomes


@pytest.mark.parametrize("name", _names("2:") + _names("4:"))
def test_a_crafted_head_is_refused_before_anything_is_allocated(
    issue_outcomes: dict[str, dict[str, str]], name: str
) -> None:
    """Extents past the format's maximum (or zero) are a LimitError from the checks that run first."""
    assert issue_outcomes[name]["outcome"] == "limit", issue_outcomes[name]


def test_a_stream_that_runs_out_stops_the_decode(issue_outcomes: dict[str, dict[str, str]]) -> None:
    """Decoding stops where the words end, and says so (bench.fuzz_engine times it: under 0.1 s)."""
    outcome = issue_outcomes["3: 256M voxels at the density floor"]
    assert outcome["outcome"] == "typed" and "ran out of words" in outcome["error"], outcome


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("1: model sums over 2**30, engine called directly", "ValueError: emzip engine: model sums"),
        ("5: invalid cum and lut, right size", "ValueError: emzip engine: malformed rANS tables"),
        ("5: zero frequencies in encode_stripe", "ValueError: emzip engine: malformed rANS tables"),
        ("5: a list where a tuple is expected", "TypeError: stripe 0: expected a tuple"),
        ("6: junk after MODL's xz stream", "CorruptDataError: 4 bytes after the model's xz stream"),
    ],
)
def test_hostile_engine_arguments_and_models_end_in_typed_errors(
    issue_outcomes: dict[str, dict[str, str]], name: str, says: str
) -> None:
    """Refused for what they are, before the engine reads a table or a weight."""
    assert issue_outcomes[name]["outcome"] == "typed" and issue_outcomes[name]["error"].startswith(says), (
        issue_outcomes[name]
    )


def test_engine_refuses_extents_past_its_maximum_and_says_which() -> None:
    from codec.v4.tables import coder_tables

    job = fuzz_engine._seed_job()
    t = coder_tables(job.family)
    wide = compiled.MAX_EXTENT + 1
    with pytest.raises(ValueError, match="extent"):
        compiled.encode_stripe(np.zeros(wide, np.uint8), 1, 1, wide, 0, 1, job.model, t.cum, t.lut)
    with pytest.raises(ValueError, match="out of range"):
        compiled.encode_stripe(np.zeros(4, np.uint8), 1, 1, 1 << 40, 0, 1, job.model, t.cum, t.lut)


# -- the spec: field ranges, shift_scale 24, engine and reference together ----------------------------


def test_shift_ranges_are_those_of_the_format() -> None:
    """docs/format.md: shift_mean 5..24 and shift_scale 1..24 (readers refuse the rest)."""
    model = fuzz_engine._seed_job().model.astype(np.int64)
    for index, value in ((5, 25), (5, 4), (6, 25), (6, 0), (3, 25), (4, 0)):
        bad = model.copy()
        bad[index] = value
        with pytest.raises(BoundError):
            unpack(bad)


def test_shift_scale_24_means_scale_index_0_in_the_engine_and_the_reference() -> None:
    """v4 writers chose 24 for near-zero scale rows, and that engine gave every voxel index 0."""
    data = (GOLDEN / "learned_shift24_v4.emz").read_bytes()
    parsed = container.unpack(data)
    job = v4_block.parse(parsed.config, parsed.model, parsed.data, parsed.header.shape)  # type: ignore[arg-type]
    assert int(job.model[6]) == 24
    block = decompress(data)
    np.testing.assert_array_equal(reference.decode(job.streams, job.shape, job.model, job.family), block)
    assert engine.encode_block(block, job.model, job.family, len(job.streams)) == job.streams


def test_freeze_writes_shift_scale_23_at_most() -> None:
    """A model with a near-zero scale row is frozen with shift 23: its scale row keeps its meaning."""
    import torch

    from codec.v4.context import DEFAULT_CONTEXT
    from codec.v4.freeze import freeze
    from codec.v4.model import RasterModel

    torch.manual_seed(0)
    model = RasterModel(DEFAULT_CONTEXT.inputs, 16)
    with torch.no_grad():
        model.out.weight[1].zero_()
        model.out.bias[1] = -3.0  # the scale bias that cancels the offset: a near-zero scale row
    calibration = np.random.default_rng(0).integers(-128, 128, (512, DEFAULT_CONTEXT.inputs)).astype(np.int16)
    array = freeze(model, DEFAULT_CONTEXT, calibration)
    assert 1 <= int(array[6]) <= 23
    check_bounds(array)


def test_engine_and_reference_agree_on_random_models_over_every_range() -> None:
    """Both refuse a model or both decode the engine's stream (bench.fuzz_engine runs 1,000)."""
    rng = random.Random(33)
    verdicts = [fuzz_engine.reference_case(rng, inside=i % 5 != 0) for i in range(60)]
    assert all(v in ("both decoded", "both refused") for v in verdicts), [v for v in verdicts if "both" not in v]
    assert verdicts.count("both decoded") >= 30 and verdicts.count("both refused") >= 10


def test_trailing_bytes_after_the_model_stream_are_refused() -> None:
    blob = fuzz_engine._with_junk_model((GOLDEN / "learned_v4.emz").read_bytes())
    with pytest.raises(CorruptDataError, match="after the model's xz stream"):
        decompress(blob)


def test_scratch_counts_against_the_decoded_bytes_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output and every decoding thread's scratch together stay within the limit, or nothing runs."""
    data = (GOLDEN / "learned_v4.emz").read_bytes()
    parsed = container.unpack(data)
    job = v4_block.parse(parsed.config, parsed.model, parsed.data, parsed.header.shape)  # type: ignore[arg-type]
    voxels = int(np.prod(job.shape))
    need = engine.decode_bytes(job.shape, len(job.streams), int(job.model[0]), threads=2)
    assert need > voxels
    monkeypatch.setenv("EMZIP_MAX_DECODED_BYTES", str(need))
    decompress(data, threads=2)
    decompress(data, threads=2, max_bytes=voxels)  # a caller's exact output size (zarr's chunks) still reads
    monkeypatch.setenv("EMZIP_MAX_DECODED_BYTES", str(need - 1))
    with pytest.raises(LimitError, match="scratch"):
        decompress(data, threads=2)
    decompress(data, threads=2, max_bytes=need)  # a caller may allow more than the operator's default
    with pytest.raises(LimitError):
        decompress(data, threads=2, max_bytes=voxels - 1)  # and less output, never


# -- other builds: sanitizers, -O0 against -O3 ----------------------------------------------------------

_GOLDENS_AND_FUZZ = """
import sys
import pytest
import codec._engine
from bench import fuzz_engine
from codec import decompress
from codec.errors import EmzipError
assert codec._engine.__file__.startswith(sys.argv[1]), codec._engine.__file__  # the build under test
code = pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", sys.argv[1], "-k", "not sanitizer and not builds",
                    sys.argv[1] + "/tests/test_engine.py", sys.argv[1] + "/tests/test_golden.py"])
if code != 0:
    sys.exit(10 + code)
bad = 0
for kind, blob in fuzz_engine.container_cases(int(sys.argv[2]), int(sys.argv[3])):
    try:
        decompress(blob)
    except (EmzipError, ValueError, TypeError):
        pass
for kind, call in fuzz_engine.direct_cases(int(sys.argv[2]), int(sys.argv[3]) // 4):
    try:
        call()
    except (ValueError, TypeError):
        pass
for name, call in fuzz_engine.issue_cases():
    try:
        call()
    except (EmzipError, ValueError, TypeError):
        pass
print("fuzz smoke done")
"""


def _build_or_skip(tmp_path: Path, flags: tuple[str, ...], compiler: str = "gcc") -> engine_builds.Build:
    try:
        return engine_builds.build(tmp_path, flags, compiler)
    except engine_builds.BuildError as exc:
        pytest.skip(f"cannot build the engine here: {exc}")


@pytest.mark.slow
def test_sanitizer_build_passes_the_engine_tests_goldens_and_a_fuzz_smoke(tmp_path: Path) -> None:
    """UBSan (-fno-sanitize-recover=all): any undefined behaviour aborts the subprocess."""
    build = _build_or_skip(tmp_path, engine_builds.UBSAN)
    (tmp_path / "tests").symlink_to(REPO / "tests")
    done = engine_builds.run_on(build, _GOLDENS_AND_FUZZ, str(tmp_path), "5", "1000", timeout=900)
    assert done.returncode == 0 and "fuzz smoke done" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "runtime error" not in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
def test_address_sanitizer_build_where_its_runtime_loads_without_preloading(tmp_path: Path) -> None:
    build = _build_or_skip(tmp_path, engine_builds.ASAN)
    probe = engine_builds.run_on(build, "import codec._engine", timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"the AddressSanitizer runtime does not load without preloading it: {probe.stderr.strip()[-300:]}")
    (tmp_path / "tests").symlink_to(REPO / "tests")
    done = engine_builds.run_on(build, _GOLDENS_AND_FUZZ, str(tmp_path), "6", "300", timeout=900)
    assert done.returncode == 0 and "fuzz smoke done" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_minus_o0_and_minus_o3_builds_write_identical_bytes(tmp_path: Path) -> None:
    """The goldens re-encoded and random models on random blocks: one digest from both builds."""
    digests = []
    for flags in (engine_builds.O0, engine_builds.O3):
        build = _build_or_skip(tmp_path / flags[0].strip("-"), flags)
        done = engine_builds.run_on(build, engine_builds.STREAM_DIGEST, str(GOLDEN), "40", str(tmp_path), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        digests.append(done.stdout.strip())
    installed = subprocess.run(
        [sys.executable, "-c", engine_builds.STREAM_DIGEST, str(GOLDEN), "40", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert digests[0] == digests[1] == installed
    digest, streams = installed.split()
    assert len(digest) == len(hashlib.sha256().hexdigest()) and int(streams) > 40


def test_read_only_or_strided_buffers_are_type_errors() -> None:
    """A BufferError from the buffer protocol reaches the caller as the TypeError it is."""
    from codec.v4.tables import coder_tables

    job = fuzz_engine._seed_job()
    t = coder_tables(job.family)
    words = np.zeros(4, np.uint32)
    with pytest.raises(TypeError, match="writable"):
        compiled.decode_block(b"\0" * 8, 1, 2, 4, job.model, t.cum, t.lut, [(0, 2, words)], 1)
    with pytest.raises((TypeError, ValueError)):
        compiled.decode_block(np.zeros((2, 8), np.uint8)[:, ::2], 1, 2, 4, job.model, t.cum, t.lut, [(0, 2, words)], 1)
