"""Container format v4 (reads v1, v2 and v3 too): the bytes of one compressed block (specified in docs/format.md).

Layout, all integers little-endian::

    magic      8 bytes  89 45 4D 5A 0D 0A 1A 0A  ("\\x89EMZ\\r\\n\\x1a\\n")
    version    u16      4 (3: learned blocks in lattice groups; 2: same layout, learned streams coded
                        row pass by row pass through
                        full 256-symbol integer tables; 1: as 2 with constriction's own
                        quantized Laplace/Gaussian models)
    flags      u16      0 (reserved)
    sections   u32      number of sections that follow
    section*   tag (4 ASCII bytes), length u64, payload, CRC32(tag + payload) u32

Sections, in this order: HEAD (fixed binary header), CONF (UTF-8 JSON), MODL (learned codec
only), DATA (the coded block), END (empty). Any change to what an encoder writes for the same
input bumps ``FORMAT_VERSION``; readers refuse versions they do not know.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from codec.errors import CorruptDataError, FormatError, TruncatedError, UnsupportedVersionError

MAGIC = b"\x89EMZ\r\n\x1a\n"
FORMAT_VERSION = 4
#: Versions this reader decodes. v1 and v2 differ only in how learned streams turn model outputs
#: into probabilities (see codec.legacy.entropy.CODER_BY_VERSION); v3 codes learned blocks in lattice
#: groups with a float32-exact model and windowed probabilities; v4 codes them in raster order
#: with an int32 model through the compiled engine (codec.v4, docs/format.md).
READABLE_VERSIONS = (1, 2, 3, 4)
#: Codec ids stored in HEAD.
CODEC_IDS = {"learned": 1, "jpegxl": 2, "lzma": 3}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
#: Dtypes a container may hold (numpy ``dtype.str`` of the little-endian form).
DTYPES = ("|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8", "|b1")
MAX_NDIM = 4
#: Refuse headers that claim more than this many voxels (16 Gi) before allocating anything.
MAX_VOXELS = 1 << 34
MAX_CONF_BYTES = 1 << 20
_SECTION_ORDER_LEARNED = (b"HEAD", b"CONF", b"MODL", b"DATA", b"END\0")
_SECTION_ORDER_CLASSIC = (b"HEAD", b"CONF", b"DATA", b"END\0")
_PREAMBLE = struct.Struct("<8sHHI")
_SECTION_HEAD = struct.Struct("<4sQ")
_HEAD = struct.Struct("<B8sB4Q32s")  # codec id, dtype str, ndim, 4 dims, sha256


@dataclass(frozen=True)
class Header:
    """What HEAD holds: enough to allocate, check and route the block."""

    codec: str
    dtype: str
    shape: tuple[int, ...]
    sha256: bytes

    @property
    def voxels(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Container:
    """A parsed container: header, JSON configuration, model bytes (or b""), data bytes."""

    header: Header
    config: dict[str, Any]
    model: bytes
    data: bytes
    version: int = FORMAT_VERSION


def _pack_head(h: Header) -> bytes:
    dims = list(h.shape) + [0] * (MAX_NDIM - len(h.shape))
    return _HEAD.pack(CODEC_IDS[h.codec], h.dtype.encode("ascii").ljust(8, b"\0"), len(h.shape), *dims, h.sha256)


def _unpack_head(payload: bytes) -> Header:
    if len(payload) != _HEAD.size:
        raise CorruptDataError(f"HEAD section is {len(payload)} bytes, expected {_HEAD.size}")
    codec_id, dtype_raw, ndim, d0, d1, d2, d3, sha = _HEAD.unpack(payload)
    if codec_id not in CODEC_NAMES:
        raise FormatError(f"unknown codec id {codec_id} in HEAD")
    dtype = dtype_raw.rstrip(b"\0").decode("ascii", errors="replace")
    if dtype not in DTYPES:
        raise FormatError(f"unsupported dtype {dtype!r} in HEAD")
    if not 1 <= ndim <= MAX_NDIM:
        raise CorruptDataError(f"HEAD claims {ndim} dimensions")
    shape = (d0, d1, d2, d3)[:ndim]
    header = Header(CODEC_NAMES[codec_id], dtype, tuple(int(d) for d in shape), sha)
    if header.voxels > MAX_VOXELS:
        raise CorruptDataError(f"HEAD claims {header.voxels} voxels, more than the limit {MAX_VOXELS}")
    return header


def _section(tag: bytes, payload: bytes) -> bytes:
    return _SECTION_HEAD.pack(tag, len(payload)) + payload + struct.pack("<I", zlib.crc32(tag + payload))


def pack(container: Container) -> bytes:
    """Serialize a container (the only writer of the format)."""
    conf = json.dumps(container.config, sort_keys=True, separators=(",", ":")).encode("utf-8")
    sections = [(b"HEAD", _pack_head(container.header)), (b"CONF", conf)]
    if container.header.codec == "learned":
        sections.append((b"MODL", container.model))
    sections += [(b"DATA", container.data), (b"END\0", b"")]
    body = b"".join(_section(tag, payload) for tag, payload in sections)
    return _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(sections)) + body


def unpack(data: bytes) -> Container:
    """Parse and check a container; raises a FormatError or CorruptDataError naming the problem."""
    view = memoryview(data)
    if len(view) < len(MAGIC) or bytes(view[: len(MAGIC)]) != MAGIC:
        if len(view) < len(MAGIC) and MAGIC.startswith(bytes(view)):
            raise TruncatedError(f"data ends after {len(view)} bytes, inside the magic number")
        raise FormatError("not an emzip container (magic number missing)")
    if len(view) < _PREAMBLE.size:
        raise TruncatedError(f"data ends after {len(view)} bytes, inside the preamble")
    _, version, flags, count = _PREAMBLE.unpack_from(view, 0)
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersionError(
            f"container format version {version}; this emzip reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if flags != 0:
        raise CorruptDataError(f"reserved flags are {flags:#x}, expected 0")
    if count not in (len(_SECTION_ORDER_LEARNED), len(_SECTION_ORDER_CLASSIC)):
        raise CorruptDataError(f"container claims {count} sections")
    offset = _PREAMBLE.size
    sections: dict[bytes, bytes] = {}
    tags: list[bytes] = []
    for _ in range(count):
        if len(view) - offset < _SECTION_HEAD.size:
            raise TruncatedError(f"data ends at byte {len(view)}, inside a section header")
        tag, length = _SECTION_HEAD.unpack_from(view, offset)
        offset += _SECTION_HEAD.size
        if length > len(view) - offset - 4:
            raise TruncatedError(
                f"section {tag!r} claims {length} bytes but only {max(len(view) - offset - 4, 0)} remain"
            )
        payload = bytes(view[offset : offset + length])
        offset += length
        (crc,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if zlib.crc32(tag + payload) != crc:
            raise CorruptDataError(f"CRC32 mismatch in section {tag!r}: the container is damaged")
        tags.append(tag)
        sections[tag] = payload
    if offset != len(view):
        raise CorruptDataError(f"{len(view) - offset} unexpected bytes after the END section")
    header = _unpack_head(sections.get(b"HEAD", b""))
    expected = _SECTION_ORDER_LEARNED if header.codec == "learned" else _SECTION_ORDER_CLASSIC
    if tuple(tags) != expected:
        raise CorruptDataError(
            f"sections are {[t.decode('ascii', 'replace') for t in tags]}, expected {[t.decode() for t in expected]}"
        )
    if len(sections[b"CONF"]) > MAX_CONF_BYTES:
        raise CorruptDataError("CONF section is larger than 1 MiB")
    try:
        config = json.loads(sections[b"CONF"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # also too deep, or too many digits
        raise CorruptDataError(f"CONF section is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not isinstance(config, dict):
        raise CorruptDataError("CONF section is not a JSON object")
    return Container(header, config, sections.get(b"MODL", b""), sections[b"DATA"], version)
