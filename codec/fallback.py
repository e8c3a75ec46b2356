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
_JXL_SIGNATURE = b"\xff\x0a"
#: x = y * numerator / denominator for the SizeHeader's ``ratio`` field 1..7 (JPEG XL, ISO/IEC 18181-1).
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


class _Bits:
    """Little-endian bit reader over a JPEG XL codestream (bits are read least significant first)."""

    def __init__(self, data: bytes, start: int) -> None:
        self.data, self.position = data, start * 8

    def read(self, count: int) -> int:
        value = 0
        for i in range(count):
            byte = self.position >> 3
            if byte >= len(self.data):
                raise CorruptDataError("JPEG-XL frame ends inside its size header")
            value |= ((self.data[byte] >> (self.position & 7)) & 1) << i
            self.position += 1
        return value

    def size(self, small: bool) -> int:
        if small:
            return (self.read(5) + 1) * 8
        return 1 + self.read((9, 13, 18, 30)[self.read(2)])


def _codestream_start(frame: bytes) -> int:
    """Offset of the codestream's FF 0A signature: 0 for a bare codestream, else inside the ISOBMFF
    container's first ``jxlc`` box (or first ``jxlp`` box, after its 4-byte index)."""
    if frame[:2] == _JXL_SIGNATURE:
        return 0
    offset = 0
    while offset + 8 <= len(frame):
        size = int.from_bytes(frame[offset : offset + 4], "big")
        kind = frame[offset + 4 : offset + 8]
        header = 8
        if size == 1:
            if offset + 16 > len(frame):
                break
            size, header = int.from_bytes(frame[offset + 8 : offset + 16], "big"), 16
        elif size == 0:
            size = len(frame) - offset
        if size < header:
            break
        body = offset + header + (4 if kind == b"jxlp" else 0)
        if kind in (b"jxlc", b"jxlp"):
            if frame[body : body + 2] != _JXL_SIGNATURE:
                break
            return body
        offset += size
    raise CorruptDataError("JPEG-XL frame holds no codestream (no FF 0A signature)")


def jpegxl_frame_shape(frame: bytes) -> tuple[int, int]:
    """(height, width) from a bare JPEG XL codestream's SizeHeader, without decoding the image.

    The decoder compares it with the slice shape HEAD gives before decoding: a frame that
    claims a larger image is refused before the library allocates it.
    """
    start = _codestream_start(frame)
    bits = _Bits(frame, start + 2)
    small = bool(bits.read(1))
    height = bits.size(small)
    ratio = bits.read(3)
    if ratio == 0:
        width = bits.size(small)
    else:
        numerator, denominator = _JXL_RATIOS[ratio]
        width = height * numerator // denominator
    return height, width


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
        claimed = jpegxl_frame_shape(data[offset : offset + length])
        if claimed != shape[1:]:
            raise CorruptDataError(f"JPEG-XL frame of slice {z} claims {claimed}, the block's slices are {shape[1:]}")
        try:
            plane = imagecodecs.jpegxl_decode(data[offset : offset + length])
        except Exception as exc:  # the library raises its own error types
            raise CorruptDataError(f"JPEG-XL frame of slice {z} does not decode: {exc}") from exc
        if plane.shape != shape[1:] or plane.dtype != dtype:
            raise CorruptDataError(f"JPEG-XL frame of slice {z} decodes to {plane.shape} {plane.dtype}")
        out[z] = plane
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
