"""Bounded decoding: what a container may make a decoder allocate, checked before it allocates.

A container's HEAD says how large its block is; a decoder allocates that. From a crafted (or
damaged, CRCs recomputed) container, HEAD may claim gigabytes for a payload of a few hundred
bytes. So before anything is allocated:

- the decoded size in bytes (voxels x itemsize, not voxels alone) must be at most
  ``max_decoded_bytes()``: by default a 64 x 4096 x 4096 uint16 block (2 GiB), settable with
  ``EMZIP_MAX_DECODED_BYTES`` or a decoder's ``max_bytes`` argument;
- the payload must be able to produce what HEAD claims: a learned slice stream codes at least
  ``MIN_LEARNED_BITS_PER_VOXEL`` per voxel (the encoder never writes one that codes less; it
  stores such a block with the classic codec), a JPEG-XL frame's own size header must give the
  slice shape HEAD gives (read before the frame is decoded), an xz payload is never inflated
  past HEAD's size.
"""

from __future__ import annotations

import os

from codec.errors import CorruptDataError, EmzipError

ENVIRONMENT = "EMZIP_MAX_DECODED_BYTES"
#: A 64 x 4096 x 4096 uint16 block.
DEFAULT_MAX_DECODED_BYTES = 64 * 4096 * 4096 * 2
#: Fewest bits per voxel a learned slice stream may spend (format rule, docs/format.md). A block
#: coded below it would be near constant, where JPEG-XL is smaller by orders of magnitude anyway.
MIN_LEARNED_BITS_PER_VOXEL = 0.01
#: Bits of a slice stream that are ANS state rather than coded symbols (the final state).
STREAM_STATE_BITS = 64

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "ENVIRONMENT",
    "MIN_LEARNED_BITS_PER_VOXEL",
    "LimitError",
    "check_decoded_bytes",
    "check_learned_payload",
    "max_decoded_bytes",
]


class LimitError(CorruptDataError):
    """A container claims more than the decoder may allocate, or more than its payload can hold."""


def max_decoded_bytes() -> int:
    """The decoded-size limit: ``EMZIP_MAX_DECODED_BYTES`` if set (a positive integer), else the default."""
    text = os.environ.get(ENVIRONMENT)
    if not text:
        return DEFAULT_MAX_DECODED_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise EmzipError(f"{ENVIRONMENT}={text!r}: expected a positive number of bytes")
    return value


def check_decoded_bytes(voxels: int, itemsize: int, limit: int | None = None) -> None:
    """Refuse a block whose decoded bytes exceed ``limit`` (default ``max_decoded_bytes()``)."""
    limit = max_decoded_bytes() if limit is None else limit
    size = voxels * itemsize
    if size > limit:
        raise LimitError(
            f"the container claims {size} decoded bytes, over the limit of {limit} "
            f"(raise it with {ENVIRONMENT} if such blocks are expected)"
        )


def check_learned_payload(slice_voxels: int, words: int, z: int, unit: str = "slice") -> None:
    """Refuse a learned stream (of slice ``z``, or of another ``unit``: v4 codes stripes) too
    short to code ``slice_voxels`` voxels at the format's floor."""
    needed = slice_voxels * MIN_LEARNED_BITS_PER_VOXEL
    if 32 * words + STREAM_STATE_BITS < needed:
        raise LimitError(
            f"{unit} {z}'s stream has {32 * words} bits, too few for {slice_voxels} voxels "
            f"(at least {MIN_LEARNED_BITS_PER_VOXEL} bits per voxel)"
        )
