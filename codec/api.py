"""compress / decompress: the codec's public entry points.

``encode`` picks the path (learned model or classic fallback), builds the container, and by
default decodes it again before returning: no caller ever receives bytes that were not shown
to reproduce the input exactly.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from codec import container, fallback
from codec.container import Container, Header
from codec.errors import CorruptDataError, EmzipError, FormatError, UnsupportedInputError
from codec.limits import LimitError, check_decoded_bytes
from codec.settings import Settings
from codec.shared import SharedModel
from codec.v4 import block as v4_block
from codec.v4.context import MAX_EXTENT

if TYPE_CHECKING:  # torch (training, v1-v3 decoding) is imported where it is used: v4 decoding never needs it
    import torch

    from codec.v4.train import TrainReport

log = logging.getLogger("emzip.codec")

#: Blocks smaller than this go to the classic codec: a model's weights would not pay.
MIN_LEARNED_VOXELS = 16_384
#: JPEG-XL effort of the quick classic probe, and how much smaller than the probe a learned
#: container must be to skip the full-effort classic encode. On the shared EM volumes e3 is
#: within 0.6% of e7 either way (ISBI: e3 0.6% smaller), and the 8-slice estimate within 1% of
#: e3: a learned block smaller than the estimate keeps the learned path, at worst about 1% above
#: what e7 would have stored (bench/RESULTS.md, v4).
CLASSIC_PROBE_EFFORT = 3
CLASSIC_PROBE_MARGIN = 1.0
#: The probe encodes at most this many evenly spaced slices of the block and scales their size
#: to the block: JPEG-XL codes slices independently, so the estimate costs 1/8 of a 64-slice encode.
CLASSIC_PROBE_SLICES = 8

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EncodeResult:
    """A container and what it took to make it (for provenance and benchmarks)."""

    data: bytes
    codec: str
    reason: str
    sha256: str
    raw_bytes: int
    training: TrainReport | None = None
    model_sha256: str | None = None
    model_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    shared: SharedModel | None = field(default=None, repr=False)
    """The acquisition model the next blocks should use (``codec.shared``); None when not learned."""
    seconds: float = 0.0

    @property
    def bits_per_voxel(self) -> float:
        voxels = self.raw_bytes  # per byte of input; callers with wider dtypes scale themselves
        return 8.0 * len(self.data) / max(voxels, 1)


def _contiguous_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes in C order without a copy where it is already contiguous (hashlib reads
    the buffer; ``tobytes()`` would copy a whole block first)."""
    contiguous = np.ascontiguousarray(array)
    return memoryview(contiguous.data).cast("B") if contiguous.size else memoryview(b"")


def _pick_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _as_array(volume: Any) -> np.ndarray:
    array = np.asarray(volume)
    if array.ndim == 0:
        raise UnsupportedInputError("a 0-dimensional array (a single value) is not a volume: give at least one axis")
    if array.ndim > container.MAX_NDIM:
        raise UnsupportedInputError(
            f"arrays of {array.ndim} dimensions are not supported (at most {container.MAX_NDIM})"
        )
    le = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if le.str not in container.DTYPES:
        raise UnsupportedInputError(f"dtype {array.dtype} is not supported (supported: {', '.join(container.DTYPES)})")
    return np.ascontiguousarray(array, dtype=le)


def _header(array: np.ndarray, codec: str) -> Header:
    digest = hashlib.sha256(_contiguous_bytes(array)).digest()
    return Header(codec, array.dtype.str, tuple(int(d) for d in array.shape), digest)


def _as_3d(array: np.ndarray) -> np.ndarray:
    return array.reshape((1, *array.shape)) if array.ndim == 2 else array


def _classic(array: np.ndarray, settings: Settings) -> tuple[str, bytes]:
    if (
        array.dtype.str in fallback.JPEGXL_DTYPES
        and array.ndim in (2, 3)
        and array.size > 0
        and settings.codec != "lzma"
    ):
        return "jpegxl", fallback.encode_jpegxl(_as_3d(array), settings.fallback_effort)
    return "lzma", fallback.encode_lzma(array)


def _classic_estimate(array: np.ndarray, settings: Settings) -> tuple[str, float]:
    """(codec, bytes) the classic path would take for ``array``, from a few evenly spaced slices."""
    block = _as_3d(array)
    picks = np.unique(np.linspace(0, len(block) - 1, min(len(block), CLASSIC_PROBE_SLICES)).round().astype(int))
    name, payload = _classic(np.ascontiguousarray(block[picks]), settings)
    return name, len(payload) * len(block) / len(picks)


def _learned_eligible(array: np.ndarray, settings: Settings) -> str | None:
    """None when the learned path may run, else why not."""
    if settings.codec in ("jpegxl", "lzma"):
        return f"classic codec requested ({settings.codec})"
    if array.dtype != np.uint8:
        return f"learned path codes uint8 only (got {array.dtype})"
    if array.ndim not in (2, 3):
        return f"learned path codes 2-D or 3-D blocks only (got {array.ndim}-D)"
    if max(array.shape) > MAX_EXTENT:
        return f"learned path codes blocks of at most {MAX_EXTENT} voxels per axis (got {array.shape})"
    if settings.training_steps() == 0:
        return "effort 0: no model trained"
    if array.size < MIN_LEARNED_VOXELS and settings.codec != "learned":
        return f"block of {array.size} voxels is too small for a model to pay"
    return None


def _learned_container(
    array: np.ndarray, settings: Settings, warm_start: dict[str, torch.Tensor] | None, progress: Progress | None
) -> tuple[bytes, TrainReport, str, v4_block.EncodedBlock]:
    """A format-v4 learned container: the block's raster model, trained or warm-started, coded by the engine."""
    block = _as_3d(array)
    from codec.family_probe import choose_family
    from codec.v4.train import TrainReport

    family = choose_family(block, settings.seed) if settings.family == "auto" else settings.family
    steps = settings.training_steps()
    if progress:
        progress("train", 0, steps)
    device = _pick_device(settings.device)
    coded = v4_block.encode(
        block,
        family,
        settings.width,
        steps,
        settings.seed,
        settings.stripes,
        warm_start,
        settings.training_steps(warm=True),
        device=device,
    )
    if progress:
        progress("train", steps, steps)
    report = TrainReport(
        steps=coded.train_steps,
        seconds=coded.train_seconds,
        validation_bits=coded.sample_bits,
        stopped_early=False,
        device=str(device),
    )
    config = {
        "engine": coded.config,
        "training": {
            "steps": coded.train_steps,
            "seconds": round(coded.train_seconds, 3),
            "sample_bits_per_voxel": round(coded.sample_bits, 5),
            "warm_start": coded.warm,
            "seed": settings.seed,
        },
    }
    data = container.pack(Container(_header(array, "learned"), config, coded.model, coded.data))
    return data, report, hashlib.sha256(coded.model).hexdigest(), coded


def _shared_container(
    array: np.ndarray, settings: Settings, shared: SharedModel
) -> tuple[bytes, TrainReport, str] | str:
    """A learned container coded with the acquisition's model as it is (``codec.shared``): no
    training. Returns why not (a string) when the block's sample says a model of its own fits better."""
    from codec.v4.train import TrainReport

    coded = v4_block.encode_with_state(_as_3d(array), shared.state, shared.family, settings.stripes, settings.seed)
    if isinstance(coded, str):
        return coded
    config = {
        "engine": coded.config,
        "training": {"steps": 0, "seconds": 0.0, "warm_start": True, "acquisition_model": True, "seed": settings.seed},
    }
    packed = container.pack(Container(_header(array, "learned"), config, coded.model, coded.data))
    report = TrainReport(0, coded.train_seconds, coded.sample_bits, False, "none (acquisition model)")
    return packed, report, hashlib.sha256(coded.model).hexdigest()


def encode(
    volume: Any,
    settings: Settings | None = None,
    *,
    warm_start: dict[str, torch.Tensor] | None = None,
    shared: SharedModel | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> EncodeResult:
    """Compress ``volume`` and report how. See :class:`Settings` for the knobs.

    ``shared``: the acquisition's model (``codec.shared``). The block is coded with it as it is
    when it still fits (its ratio to the classic probe); otherwise the block is decided again,
    warm-started from it, and ``reason`` says why. ``EncodeResult.shared`` is the model the
    next blocks should use (None when this block did not end up learned).
    """
    start = time.monotonic()
    settings = (settings or Settings()).with_overrides(**overrides)
    array = _as_array(volume)
    original_dtype = np.asarray(volume).dtype.str

    def classic(effort: int) -> tuple[str, bytes]:
        name, payload = _classic(array, settings.with_overrides(fallback_effort=effort))
        packed = container.pack(Container(_header(array, name), {"original_dtype": original_dtype}, b"", payload))
        return name, packed

    probe_effort = min(CLASSIC_PROBE_EFFORT, settings.fallback_effort)
    probed: list[tuple[str, float]] = []

    def probe() -> tuple[str, float]:
        """The classic probe's (codec, estimated bytes) for this block, computed at most once."""
        if not probed:
            probed.append(_classic_estimate(array, settings.with_overrides(fallback_effort=probe_effort)))
        return probed[0]

    learned_bytes, reason, report, model_hash, state = None, "", None, None, None
    coded: v4_block.EncodedBlock | None = None
    kept: SharedModel | None = None
    redecided = ""
    not_eligible = _learned_eligible(array, settings)
    if not_eligible is not None:
        reason = not_eligible
    elif shared is not None:
        attempt = _shared_container(array, settings, shared)
        if isinstance(attempt, str):
            redecided = f"acquisition model no longer fits ({attempt}): decided again on this block; "
        else:
            candidate, shared_report, shared_hash = attempt
            probe_name, estimate = probe()
            ratio = len(candidate) / max(estimate, 1.0)
            where = f"{ratio:.4f} of the {probe_name} e{probe_effort} estimate"
            if settings.codec == "learned" or shared.fits(ratio, CLASSIC_PROBE_MARGIN):
                learned_bytes, report, kept, model_hash = candidate, shared_report, shared, shared_hash
                reason = f"acquisition model: {where} (decided at {shared.probe_ratio:.4f})"
            else:
                redecided = (
                    f"acquisition model no longer fits ({where}, decided at {shared.probe_ratio:.4f}): "
                    "decided again on this block; "
                )
        if kept is None:
            warm_start = shared.state
    if not_eligible is None and kept is None:
        try:
            learned_bytes, report, model_hash, coded = _learned_container(array, settings, warm_start, progress)
            state = coded.state
        except (RuntimeError, ValueError, FloatingPointError, LimitError) as exc:
            log.warning("learned coding failed, storing with the classic codec instead: %s", exc)
            reason = f"learned coding failed: {exc}"
    chosen: bytes | None = None
    if kept is not None:
        chosen = learned_bytes
    elif learned_bytes is not None and settings.codec == "learned":
        chosen, reason = learned_bytes, "learned codec requested"
    elif learned_bytes is not None:
        # A fast classic probe settles the usual case; the full classic effort runs only when
        # the learned container is not clearly smaller (JPEG-XL e3 is within 0.2% of e7 on EM).
        probe_name, estimate = probe()
        if len(learned_bytes) < CLASSIC_PROBE_MARGIN * estimate:
            chosen, reason = learned_bytes, f"learned model smaller than {probe_name} e{probe_effort} (estimated)"
    if chosen is None:
        classic_name, classic_bytes = classic(settings.fallback_effort)
        if learned_bytes is not None and len(learned_bytes) < len(classic_bytes):
            chosen, reason = learned_bytes, f"learned model smaller than {classic_name}"
        else:
            if learned_bytes is not None:
                reason = f"{classic_name} ({len(classic_bytes)} B) not larger than learned ({len(learned_bytes)} B)"
            chosen = classic_bytes
    if settings.verify and chosen is learned_bytes and not _round_trips(chosen, array, progress):
        log.error("learned container failed its round trip; storing with the classic codec instead")
        chosen, reason, kept, coded = (
            classic(settings.fallback_effort)[1],
            "learned container failed verification",
            None,
            None,
        )
    if settings.verify and chosen is not learned_bytes and not _round_trips(chosen, array, None):
        raise EmzipError("classic container failed its round trip; refusing to return it")
    codec_name = container.unpack(chosen).header.codec
    learned = codec_name == "learned"
    if learned and kept is None and coded is not None:  # decided on this block: the model the next ones use
        kept = SharedModel(str(coded.config["family"]), coded.state, len(chosen) / max(probe()[1], 1.0))
    return EncodeResult(
        data=chosen,
        codec=codec_name,
        reason=redecided + reason,
        sha256=hashlib.sha256(_contiguous_bytes(array)).hexdigest(),
        raw_bytes=array.nbytes,
        training=report if learned else None,
        model_sha256=model_hash if learned else None,
        model_state=(state if state is not None else (kept.state if kept else None)) if learned else None,
        shared=kept if learned else None,
        seconds=time.monotonic() - start,
    )


def _round_trips(data: bytes, array: np.ndarray, progress: Progress | None) -> bool:
    try:
        decoded = decompress(data, progress=progress)
    except EmzipError as exc:
        log.error("round-trip decode failed: %s", exc)
        return False
    if decoded.shape != array.shape:
        return False
    # Compare bytes, not values: NaN payloads and signed zeros must survive too.
    as_stored = np.ascontiguousarray(decoded, dtype=array.dtype)
    return as_stored.tobytes() == array.tobytes()


def compress(volume: Any, settings: Settings | None = None, **overrides: Any) -> bytes:
    """Losslessly compress an array (uint8 (z, y, x) takes the learned path) to container bytes."""
    return encode(volume, settings, **overrides).data


def _original_dtype(parsed: Container) -> np.dtype[Any] | None:
    """The dtype the caller gave ``compress`` when it differs from HEAD's (another byte order), else None.

    Only a plain numeric dtype of HEAD's kind and itemsize is accepted: CONF must not turn the
    decoded bytes into other values, objects, strings or a larger array.
    """
    original = parsed.config.get("original_dtype")
    if original is None or original == parsed.header.dtype:
        return None
    if not isinstance(original, str) or len(original) > 8:
        raise CorruptDataError(f"CONF original_dtype {original!r} is not a dtype string")
    try:
        wanted = np.dtype(original)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise CorruptDataError(f"CONF original_dtype {original!r} is not a dtype") from exc
    if wanted.shape != () or wanted.fields is not None or wanted.newbyteorder("<").str != parsed.header.dtype:
        raise CorruptDataError(
            f"CONF original_dtype {original!r} is not HEAD's {parsed.header.dtype} in another byte order"
        )
    return wanted


def _check_bounds(parsed: Container, max_bytes: int | None) -> None:
    """Refuse before allocating: HEAD's decoded bytes over the limit (``codec.limits``), or a
    learned payload too short for the voxels it claims."""
    header = parsed.header
    check_decoded_bytes(header.voxels, np.dtype(header.dtype).itemsize, max_bytes)
    _original_dtype(parsed)


def decompress(
    data: bytes, *, progress: Progress | None = None, max_bytes: int | None = None, threads: int = 1
) -> np.ndarray:
    """Decode container bytes back to the exact array that was compressed.

    ``max_bytes`` bounds the decoded size (default ``codec.limits.max_decoded_bytes()``); every
    bound is checked before anything is allocated, and every failure is an ``EmzipError``.
    ``threads``: v4 learned blocks decode their stripes on up to this many threads (same bytes).
    """
    parsed = container.unpack(data)
    _check_bounds(parsed, max_bytes)
    header = parsed.header
    dtype = np.dtype(header.dtype)
    shape = header.shape
    if header.codec == "learned":
        if dtype != np.uint8 or len(shape) not in (2, 3):
            raise CorruptDataError(f"learned container claims {header.dtype} {shape}")
        shape3 = (1, *shape) if len(shape) == 2 else shape
        dims = (shape3[0], shape3[1], shape3[2])
        if parsed.version >= 4:
            job = v4_block.parse(parsed.config, parsed.model, parsed.data, dims)
            array = v4_block.decode([job], threads, max_bytes)[0].reshape(shape)
        else:
            on_slice = (lambda done, total: progress("decode", done, total)) if progress else None
            from codec.legacy import decode as legacy_decode  # v1-v3 learned blocks need torch

            array = legacy_decode.decode_learned(parsed, dims, on_slice).reshape(shape)
    elif header.codec == "jpegxl":
        if header.dtype not in fallback.JPEGXL_DTYPES or len(shape) not in (2, 3):
            raise CorruptDataError(f"JPEG-XL container claims {header.dtype} {shape}")
        shape3 = (1, *shape) if len(shape) == 2 else shape
        array = fallback.decode_jpegxl(parsed.data, (shape3[0], shape3[1], shape3[2]), dtype).reshape(shape)
    elif header.codec == "lzma":
        array = fallback.decode_lzma(parsed.data, shape, dtype)
    else:  # pragma: no cover - unpack() already refuses unknown ids
        raise FormatError(f"unknown codec {header.codec}")
    return _finish(parsed, array)


def _finish(parsed: Container, array: np.ndarray) -> np.ndarray:
    """The decoded array, checked against HEAD's SHA-256, in the caller's original dtype."""
    if hashlib.sha256(_contiguous_bytes(array)).digest() != parsed.header.sha256:
        raise CorruptDataError("decoded block does not match its recorded SHA-256")
    original = _original_dtype(parsed)
    return array.astype(original) if original is not None else array


def decompress_many(blobs: list[bytes], *, device: str = "cpu", batch: int = 8, threads: int = 1) -> list[np.ndarray]:
    """Decode many containers; identical to ``[decompress(b) for b in blobs]``.

    v4 learned blocks go through the engine together, ``batch`` at a time, their stripes
    spread over ``threads`` threads; v3 learned blocks of one shape and architecture are
    decoded ``batch`` at a time with their models stacked on ``device``. Every block is
    checked against its SHA-256.
    """
    results: list[np.ndarray | None] = [None] * len(blobs)
    engine_jobs: list[tuple[int, Container, v4_block.DecodeJob]] = []
    v3_items: list[tuple[int, Container]] = []
    for i, data in enumerate(blobs):
        parsed = container.unpack(data)
        _check_bounds(parsed, None)
        h = parsed.header
        if h.codec == "learned" and parsed.version >= 4 and h.dtype == "|u1" and len(h.shape) in (2, 3):
            dims = (1, h.shape[0], h.shape[1]) if len(h.shape) == 2 else (h.shape[0], h.shape[1], h.shape[2])
            engine_jobs.append((i, parsed, v4_block.parse(parsed.config, parsed.model, parsed.data, dims)))
        elif parsed.version == 3 and h.codec == "learned" and h.dtype == "|u1" and len(h.shape) == 3:
            v3_items.append((i, parsed))
        else:
            results[i] = decompress(data)
    for first in range(0, len(engine_jobs), batch):
        group = engine_jobs[first : first + batch]
        arrays = v4_block.decode([job for _, _, job in group], threads)
        for (i, parsed, _), array in zip(group, arrays, strict=True):
            results[i] = _finish(parsed, array.reshape(parsed.header.shape))
    if v3_items:
        from codec.legacy import decode as legacy_decode  # v3 learned blocks need torch

        for i, array in legacy_decode.decode_v3_batches(v3_items, device, batch).items():
            results[i] = array
    return [r for r in results if r is not None]


@dataclass(frozen=True)
class ContainerInfo:
    """What ``emzip info`` shows about a container without decoding it."""

    codec: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str
    compressed_bytes: int
    bits_per_voxel: float
    config: dict[str, Any]


def inspect(data: bytes) -> ContainerInfo:
    """Parse and checksum-check a container and describe it (no decoding)."""
    parsed = container.unpack(data)
    h = parsed.header
    return ContainerInfo(
        codec=h.codec,
        dtype=h.dtype,
        shape=h.shape,
        sha256=h.sha256.hex(),
        compressed_bytes=len(data),
        bits_per_voxel=8.0 * len(data) / max(h.voxels, 1),
        config=parsed.config,
    )
