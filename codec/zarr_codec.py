"""emzip as a zarr v3 array-to-bytes codec, so ``zarr.open_array`` reads emzip-coded arrays.

Registered under the name ``emzip`` through the ``zarr.codecs`` entry point (``pyproject.toml``):
with emzip installed, zarr-python finds it from an array's metadata alone. The configuration is
the codec's ``Settings`` as JSON (every field, so a chunk written today is re-encoded the same way
tomorrow; decoding needs none of it, the container carries its model). Encoding a chunk runs
``codec.compress`` with its own round-trip check; dtypes the learned path does not code take the
classic fallback as everywhere else. Decoding returns the chunk; a container holding a smaller
block than the chunk (an edge block of an archive whose chunk files are the shipped containers)
is placed at the chunk's origin and the rest filled with the array's fill value, as zarr itself
pads edge chunks.

This module is the only one in ``codec/`` that imports zarr; nothing else in the codec imports it,
so the codec stays usable without zarr installed.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec, ArrayBytesCodecPartialDecodeMixin
from zarr.core.buffer import Buffer, NDBuffer
from zarr.registry import register_codec

from codec.api import compress, decompress, decompress_many
from codec.container import unpack
from codec.errors import CorruptDataError, EmzipError
from codec.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Self

    from zarr.abc.store import ByteGetter
    from zarr.core.array_spec import ArraySpec
    from zarr.core.indexing import SelectorTuple

CODEC_NAME = "emzip"
#: Threads a batch of chunks decodes on (the engine releases the GIL; format-v4 stripes run side by side).
DECODE_THREADS = min(os.cpu_count() or 1, 8)

__all__ = ["CODEC_NAME", "EmzipCodec"]


@dataclass(frozen=True)
class EmzipCodec(ArrayBytesCodecPartialDecodeMixin, ArrayBytesCodec):
    """zarr v3 array-to-bytes codec: each chunk is one emzip container.

    Reads go through the partial-decode path, which hands the codec the chunk's store key, so a
    damaged chunk's error names it (``chunk file:///.../c/0/1/2: CRC32 mismatch ...``).
    """

    is_fixed_size = False
    settings: tuple[tuple[str, Any], ...]
    """Every ``Settings`` field, as sorted (name, value) pairs (hashable, like every zarr codec)."""

    def __init__(self, *, settings: dict[str, Any] | Settings | None = None) -> None:
        if isinstance(settings, Settings):
            resolved = settings
        else:
            try:
                resolved = Settings().with_overrides(**(settings or {}))
            except (TypeError, ValueError, EmzipError) as exc:
                raise ValueError(f"emzip codec: invalid settings {settings!r}: {exc}") from exc
        object.__setattr__(self, "settings", tuple(sorted(resolved.to_json().items())))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """From the codec's JSON in an array's metadata (``{"name": "emzip", "configuration": {...}}``)."""
        if data.get("name") != CODEC_NAME:
            raise ValueError(f"not an emzip codec: {data!r}")
        configuration = data.get("configuration") or {}
        if not isinstance(configuration, dict):
            raise ValueError(f"emzip codec: configuration must be an object, got {configuration!r}")
        return cls(settings=configuration.get("settings"))

    def to_dict(self) -> dict[str, Any]:
        """The codec's JSON: its name and every setting."""
        return {"name": CODEC_NAME, "configuration": {"settings": dict(self.settings)}}

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Variable: a compressor's output size is not known before coding."""
        raise NotImplementedError

    async def _decode_partial_single(
        self, byte_getter: ByteGetter, selection: SelectorTuple, chunk_spec: ArraySpec
    ) -> NDBuffer | None:
        chunk_bytes = await byte_getter.get(prototype=chunk_spec.prototype)
        if chunk_bytes is None:
            return None  # a chunk never written: zarr fills it
        try:
            chunk = await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)
        except EmzipError as exc:
            raise type(exc)(f"chunk {byte_getter}: {exc}") from exc
        return chunk[selection]

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def decode(self, chunks_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]) -> Iterable[NDBuffer | None]:
        """zarr's batch decode: every chunk of the batch goes through ``decompress_many`` at once,
        so format-v4 blocks share the engine's threads (their stripes decode side by side)."""
        return await asyncio.to_thread(self._decode_batch, list(chunks_and_specs))

    def _decode_batch(self, items: list[tuple[Buffer | None, ArraySpec]]) -> list[NDBuffer | None]:
        present = [(i, chunk.to_bytes(), spec) for i, (chunk, spec) in enumerate(items) if chunk is not None]
        for i, raw, spec in present:
            try:
                _check_chunk(raw, spec)
            except EmzipError as exc:
                raise type(exc)(f"chunk {i} of the batch: {exc}") from exc
        arrays = decompress_many([raw for _, raw, _ in present], threads=DECODE_THREADS)
        out: list[NDBuffer | None] = [None] * len(items)
        for (i, _, spec), decoded in zip(present, arrays, strict=True):
            out[i] = _to_chunk(decoded, spec)
        return out

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        raw = chunk_bytes.to_bytes()
        shape, dtype = _check_chunk(raw, chunk_spec)
        return _to_chunk(decompress(raw, max_bytes=int(np.prod(shape)) * np.dtype(dtype).itemsize), chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        array = np.ascontiguousarray(chunk_array.as_numpy_array())
        data = compress(array, Settings().with_overrides(**dict(self.settings)))
        return chunk_spec.prototype.buffer.from_bytes(data)


register_codec(CODEC_NAME, EmzipCodec)


def _check_chunk(raw: bytes, chunk_spec: ArraySpec) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Refuse a container whose HEAD does not fit the array's chunk, before anything is decoded."""
    dtype = chunk_spec.dtype.to_native_dtype()
    shape = tuple(chunk_spec.shape)
    header = unpack(raw).header
    fits = len(header.shape) == len(shape) and all(d <= s for d, s in zip(header.shape, shape, strict=True))
    if np.dtype(header.dtype).newbyteorder("=") != np.dtype(dtype).newbyteorder("=") or not fits:
        raise CorruptDataError(
            f"emzip chunk holds {header.dtype}{list(header.shape)}, the array's chunks are {dtype}{list(shape)}"
        )
    return shape, dtype


def _to_chunk(decoded: np.ndarray, chunk_spec: ArraySpec) -> NDBuffer:
    """The decoded block as the array's chunk: same dtype; an edge block padded as zarr pads edges."""
    dtype = chunk_spec.dtype.to_native_dtype()
    shape = tuple(chunk_spec.shape)
    if decoded.dtype != dtype:
        raise CorruptDataError(f"emzip chunk decodes to {decoded.dtype}, the array's chunks are {dtype}")
    if decoded.shape != shape:
        full = np.full(shape, chunk_spec.fill_value, dtype=dtype)
        full[tuple(slice(0, d) for d in decoded.shape)] = decoded
        decoded = full
    return chunk_spec.prototype.nd_buffer.from_numpy_array(decoded)
