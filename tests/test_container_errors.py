"""Damaged containers give typed errors that name the problem: never garbage, never a crash."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from codec import (
    CorruptDataError,
    EmzipError,
    FormatError,
    TruncatedError,
    UnsupportedVersionError,
    compress,
    container,
    decompress,
)
from tests.conftest import FAST


@pytest.fixture(scope="module")
def learned_bytes() -> bytes:
    volume = np.random.default_rng(0).integers(100, 140, (3, 20, 24), dtype=np.uint8)
    return compress(volume, codec="learned", **FAST)


@pytest.fixture(scope="module")
def classic_bytes() -> bytes:
    return compress(np.arange(600, dtype=np.uint16).reshape(2, 15, 20))


def test_every_truncation_is_a_typed_error(learned_bytes: bytes, classic_bytes: bytes) -> None:
    for data in (learned_bytes, classic_bytes):
        cuts = sorted(set(range(0, 64)) | set(range(64, len(data), max(1, len(data) // 97))))
        for cut in cuts:
            with pytest.raises(FormatError if cut < 20 else EmzipError):
                decompress(data[:cut])
        with pytest.raises(TruncatedError):
            decompress(data[: len(data) - 1])


def test_every_flipped_byte_is_detected(learned_bytes: bytes) -> None:
    step = max(1, len(learned_bytes) // 151)
    for position in range(0, len(learned_bytes), step):
        damaged = bytearray(learned_bytes)
        damaged[position] ^= 0x40
        with pytest.raises(EmzipError):
            decompress(bytes(damaged))


def test_flip_inside_data_names_the_section(learned_bytes: bytes) -> None:
    damaged = bytearray(learned_bytes)
    damaged[-40] ^= 1
    with pytest.raises(CorruptDataError, match="CRC32 mismatch in section b'DATA'"):
        decompress(bytes(damaged))


def test_not_a_container() -> None:
    with pytest.raises(FormatError, match="magic"):
        decompress(b"PK\x03\x04 definitely a zip file")


def test_newer_version_is_refused(classic_bytes: bytes) -> None:
    data = bytearray(classic_bytes)
    newer = container.FORMAT_VERSION + 1
    struct.pack_into("<H", data, 8, newer)
    with pytest.raises(UnsupportedVersionError, match=f"version {newer}; this emzip reads versions 1, 2"):
        decompress(bytes(data))


def test_huge_shape_claim_is_refused_before_allocating(classic_bytes: bytes) -> None:
    parsed = container.unpack(classic_bytes)
    header = container.Header(
        parsed.header.codec, parsed.header.dtype, (1 << 20, 1 << 20, 1 << 20), parsed.header.sha256
    )
    forged = container.pack(container.Container(header, parsed.config, parsed.model, parsed.data))
    with pytest.raises(CorruptDataError, match="more than the limit"):
        decompress(forged)


def test_consistent_but_wrong_payload_fails_the_checksum(classic_bytes: bytes) -> None:
    """A container whose CRCs are recomputed over swapped data still cannot pass the SHA-256."""
    parsed = container.unpack(classic_bytes)
    other = container.unpack(compress(np.arange(600, dtype=np.uint16).reshape(2, 15, 20)[::-1].copy()))
    forged = container.pack(container.Container(parsed.header, parsed.config, b"", other.data))
    with pytest.raises(CorruptDataError, match="SHA-256"):
        decompress(forged)


def test_forged_architecture_is_refused(learned_bytes: bytes) -> None:
    parsed = container.unpack(learned_bytes)
    config = dict(parsed.config)
    config["engine"] = dict(config["engine"], stripes=100000)
    forged = container.pack(container.Container(parsed.header, config, parsed.model, parsed.data))
    with pytest.raises(CorruptDataError, match="stripes"):
        decompress(forged)
