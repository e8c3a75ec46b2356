"""Classic lossless codecs for blocks the learned model should not or cannot code.

``jpegxl``: JPEG-XL lossless, slice by slice (uint8 and uint16). ``lzma``: xz of the raw
little-endian bytes (any dtype). Payloads are framed with explicit lengths so that the decoder
never trusts a codec to stop where it should.
"""

from __future__ import annotations

import lzma
import struct

import imagecodecs
import numpy as np

from codec.errors import CorruptDataError

JPEGXL_DTYPES = ("|u1", "<u2")


def encode_jpegxl(volume: np.ndarray, effort: int) -> bytes:
    """JPEG-XL lossless of each (y, x) slice of a 3-D uint8/uint16 array."""
    parts = [struct.pack("<I", volume.shape[0])]
    for plane in volume:
        coded = imagecodecs.jpegxl_encode(np.ascontiguousarray(plane), lossless=True, effort=effort)
        parts.append(struct.pack("<I", len(coded)))
        parts.append(bytes(coded))
    return b"".join(parts)


def decode_jpegxl(data: bytes, shape: tuple[int, int, int], dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`encode_jpegxl`; raises CorruptDataError on any inconsistency."""
    out = np.empty(shape, dtype)
    if len(data) < 4 or struct.unpack_from("<I", data, 0)[0] != shape[0]:
        raise CorruptDataError("JPEG-XL payload does not hold one frame per slice")
    offset = 4
    for z in range(shape[0]):
        if offset + 4 > len(data):
            raise CorruptDataError(f"JPEG-XL payload ends before slice {z}")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise CorruptDataError(f"JPEG-XL frame of slice {z} runs past the payload")
        try:
            # Decoded straight into the slice: libjxl's basic info (size, channels, bit depth) is
            # compared with ``out`` before any pixel is decoded, so a frame claiming a larger
            # image (a decompression bomb) is refused without allocating it, in well under 1 ms.
            imagecodecs.jpegxl_decode(data[offset : offset + length], out=out[z])
        except Exception as exc:  # the library raises its own error types (ValueError for a wrong shape)
            raise CorruptDataError(
                f"JPEG-XL frame of slice {z} does not decode into {shape[1:]} {dtype}: {exc}"
            ) from exc
        offset += length
    if offset != len(data):
        raise CorruptDataError("JPEG-XL payload has trailing bytes")
    return out


def encode_lzma(volume: np.ndarray) -> bytes:
    """xz (preset 9) of the array's little-endian C-order bytes."""
    return lzma.compress(np.ascontiguousarray(volume).tobytes(), preset=9)


def decode_lzma(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`encode_lzma`, never inflating past the expected size."""
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        raw = decompressor.decompress(data, max_length=expected + 1)
    except lzma.LZMAError as exc:
        raise CorruptDataError(f"xz payload does not decode: {exc}") from exc
    if len(raw) != expected or not decompressor.eof or decompressor.unused_data:
        raise CorruptDataError(f"xz payload decodes to {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype).reshape(shape).copy()
