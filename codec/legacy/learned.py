"""Per-slice stream framing (all versions) and the v1/v2 learned decoder (decoding only).

Every learned container holds one ANS stream per slice with the CRC32 of the slice it decodes
to, so a mismatch is reported at the slice where it happens. v1/v2 blocks were coded slice by
slice and row pass by row pass (:mod:`codec.legacy.context`) with an :class:`IntegerModel`; their
encoder is retired (v3 replaced it, :mod:`codec.legacy.lattice_codec`), their decoder stays so that
containers facilities already hold still decode.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from codec.errors import CorruptDataError
from codec.legacy import context
from codec.legacy.entropy import StreamDecoder
from codec.legacy.quantize import IntegerModel


@dataclass(frozen=True)
class SliceStream:
    """The coded words of one slice and the CRC32 of its raw bytes."""

    words: np.ndarray  # uint32
    crc32: int


def decode_block(
    model: IntegerModel,
    streams: list[SliceStream],
    shape: tuple[int, int, int],
    progress: Callable[[int, int], None] | None = None,
    coder: str = "tables",
) -> np.ndarray:
    """Decode the streams of :func:`encode_block` back into the uint8 block.

    ``coder`` names how probabilities are formed (see ``codec.legacy.entropy.CODER_BY_VERSION``):
    the container's version decides it.
    """
    z_count, h, w = shape
    out = np.empty(shape, np.uint8)
    history = torch.zeros((model.arch.k, h, w), dtype=torch.float64)  # centred, newest first
    previous_padded = context.padded_plane(h, w)
    columns = [context.pass_columns(w, p) for p in range(len(context.PASSES))]
    for z in range(z_count):
        features = model.trunk_features(history.unsqueeze(0))[0].numpy()  # (C, H, W)
        current_padded = context.padded_plane(h, w)
        decoder = StreamDecoder(model.arch.family, streams[z].words, coder)
        for row in range(h):
            for p, cols in enumerate(columns):
                if cols.size == 0:
                    continue
                raw = context.row_neighbour_features(current_padded, previous_padded, row, p)
                x = np.concatenate([features[:, row, cols].T, raw], axis=1)
                mean16, scale_index = model.head(x, p)
                symbols = decoder.decode(mean16, scale_index)
                current_padded[row + context.PAD_Y, cols + context.PAD_X] = symbols - context.CENTER
        plane = current_padded[context.PAD_Y : context.PAD_Y + h, context.PAD_X : context.PAD_X + w]
        out[z] = (plane + context.CENTER).astype(np.uint8)
        if zlib.crc32(out[z].tobytes()) != streams[z].crc32 or not decoder.is_exhausted():
            raise CorruptDataError(f"slice {z} did not decode to its recorded CRC32: stream or model damaged")
        previous_padded = current_padded
        if model.arch.k > 0:
            history = torch.roll(history, 1, dims=0)
            history[0] = torch.from_numpy(plane.copy())
        if progress is not None:
            progress(z + 1, z_count)
    return out


def pack_streams(streams: list[SliceStream]) -> bytes:
    """DATA payload of the learned codec: u32 slice count, then per slice u32 CRC32, u32 word
    count and the words (u32), all little-endian."""
    parts = [struct.pack("<I", len(streams))]
    for s in streams:
        parts.append(struct.pack("<II", s.crc32, s.words.size))
        parts.append(s.words.astype("<u4").tobytes())
    return b"".join(parts)


def unpack_streams(data: bytes, slices: int) -> list[SliceStream]:
    """Inverse of :func:`pack_streams`, checking every length against the payload."""
    if len(data) < 4 or struct.unpack_from("<I", data, 0)[0] != slices:
        raise CorruptDataError(f"learned payload does not hold {slices} slice streams")
    offset, streams = 4, []
    for z in range(slices):
        if offset + 8 > len(data):
            raise CorruptDataError(f"learned payload ends before slice {z}")
        crc, count = struct.unpack_from("<II", data, offset)
        offset += 8
        if offset + 4 * count > len(data):
            raise CorruptDataError(f"stream of slice {z} runs past the payload")
        words = np.frombuffer(data, "<u4", count, offset).astype(np.uint32)
        offset += 4 * count
        streams.append(SliceStream(words, crc))
    if offset != len(data):
        raise CorruptDataError("learned payload has trailing bytes")
    return streams
