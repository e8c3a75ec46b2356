"""Decoding of learned blocks in container formats 1, 2 and 3 (read, never written).

:mod:`codec.api` routes every learned container older than version 4 here; everything checked
here (architecture limits, model size, stream density) is refused with a CorruptDataError.
"""

from __future__ import annotations

import hashlib
import lzma
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from codec.container import Container
from codec.errors import CorruptDataError
from codec.legacy import lattice_codec, learned
from codec.legacy.entropy import CODER_BY_VERSION
from codec.legacy.frozen import FrozenModel
from codec.legacy.model import Architecture
from codec.legacy.quantize import IntegerModel
from codec.limits import check_learned_payload

_MODEL_LIMITS = {"k": (1, 8), "trunk_channels": (1, 64), "trunk_layers": (1, 6), "head_hidden": (1, 128)}
_MAX_MODEL_BYTES = 1 << 24


def architecture(config: dict[str, Any]) -> Architecture:
    """The v1-v3 model architecture CONF names, every field within the format's limits."""
    raw = config.get("architecture")
    if not isinstance(raw, dict):
        raise CorruptDataError("CONF has no model architecture")
    try:
        arch = Architecture(**raw)
    except TypeError as exc:
        raise CorruptDataError(f"CONF architecture is malformed: {exc}") from exc
    for name, (lo, hi) in _MODEL_LIMITS.items():
        value = getattr(arch, name)
        if not isinstance(value, int) or not lo <= value <= hi:
            raise CorruptDataError(f"CONF architecture field {name}={value!r} is out of range")
    if arch.family not in ("gaussian", "laplace"):
        raise CorruptDataError(f"CONF names unknown distribution family {arch.family!r}")
    return arch


def _model_bytes(packed: bytes) -> bytes:
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        return decompressor.decompress(packed, max_length=_MAX_MODEL_BYTES)
    except lzma.LZMAError as exc:
        raise CorruptDataError(f"model weights do not decompress: {exc}") from exc


def decode_model(arch: Architecture, packed: bytes) -> IntegerModel:
    """The model of a v1/v2 container."""
    return IntegerModel.from_bytes(arch, _model_bytes(packed))


def decode_frozen(arch: Architecture, packed: bytes) -> FrozenModel:
    """The model of a v3 container (refused unless its float32 bound holds)."""
    return FrozenModel.from_bytes(arch, _model_bytes(packed))


def learned_streams(parsed: Container, shape3: tuple[int, ...]) -> list[learned.SliceStream]:
    """The slice streams of a learned container, each checked against the format's density floor."""
    streams = learned.unpack_streams(parsed.data, shape3[0])
    if parsed.version >= 3:
        for z, stream in enumerate(streams):
            check_learned_payload(shape3[1] * shape3[2], len(stream.words), z)
    return streams


def decode_learned(
    parsed: Container, dims: tuple[int, int, int], on_slice: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """A v1, v2 or v3 learned block, as (z, y, x) uint8 (not yet checked against its SHA-256)."""
    streams = learned_streams(parsed, dims)
    arch = architecture(parsed.config)
    with torch.no_grad():
        if parsed.version >= 3:
            frozen = decode_frozen(arch, parsed.model)
            return lattice_codec.decode_blocks([frozen], [streams], dims, progress=on_slice)[0]
        model = decode_model(arch, parsed.model)
        return learned.decode_block(model, streams, dims, on_slice, CODER_BY_VERSION[parsed.version])


def decode_v3_batches(items: list[tuple[int, Container]], device: str, batch: int) -> dict[int, np.ndarray]:
    """v3 learned blocks (index, container), ``batch`` of one shape and architecture at a time with
    their models stacked on ``device``; each checked against its SHA-256."""
    groups: dict[tuple[Architecture, tuple[int, ...]], list[tuple[int, Container]]] = {}
    for i, parsed in items:
        groups.setdefault((architecture(parsed.config), parsed.header.shape), []).append((i, parsed))
    target = torch.device(device)
    out: dict[int, np.ndarray] = {}
    for (arch, shape), members in groups.items():
        for first in range(0, len(members), batch):
            chunk = members[first : first + batch]
            models = [decode_frozen(arch, p.model) for _, p in chunk]
            streams = [learned_streams(p, shape) for _, p in chunk]
            with torch.no_grad():
                arrays = lattice_codec.decode_blocks(models, streams, (shape[0], shape[1], shape[2]), target)
            for (i, parsed), array in zip(chunk, arrays, strict=True):
                if hashlib.sha256(np.ascontiguousarray(array).data).digest() != parsed.header.sha256:
                    raise CorruptDataError(f"block {i} does not match its recorded SHA-256")
                out[i] = array
    return out
