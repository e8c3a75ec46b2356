"""emzip against the classic lossless codecs, measured side by side in one run (``emzip bench``).

Every codec codes the same blocks and every output is decoded and compared with the block; a
mismatch aborts the run. Bits per voxel count every byte a codec returns (emzip's include its
container header, model weights and checksums). Image codecs code slice by slice; zstd and xz
code the raw block bytes. WebP lossless has no greyscale mode: slices are given as RGB with three
equal channels (its subtract-green transform makes that nearly free) and all channels are checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import imagecodecs
import numpy as np
import torch

from codec import Settings, container, decompress, decompress_many, encode
from codec.legacy.analysis import analyse_learned

Encoder = Callable[[np.ndarray], list[bytes]]
Decoder = Callable[[list[bytes], tuple[int, int, int]], np.ndarray]
DEFAULT_BLOCK = (64, 256, 256)
REFERENCE = "JPEG-XL"
Bytes = bytes | bytearray

__all__ = ["BlockAnalysis", "VolumeResult", "classic_codecs", "run_volume"]


def _slices(
    encode_slice: Callable[[np.ndarray], Bytes], decode_slice: Callable[[bytes], np.ndarray]
) -> tuple[Encoder, Decoder]:
    def enc(block: np.ndarray) -> list[bytes]:
        return [bytes(encode_slice(np.ascontiguousarray(s))) for s in block]

    def dec(parts: list[bytes], shape: tuple[int, int, int]) -> np.ndarray:
        return np.stack([decode_slice(p) for p in parts]).reshape(shape)

    return enc, dec


def _raw(encode_bytes: Callable[[bytes], Bytes], decode_bytes: Callable[[bytes], Bytes]) -> tuple[Encoder, Decoder]:
    def enc(block: np.ndarray) -> list[bytes]:
        return [bytes(encode_bytes(np.ascontiguousarray(block).tobytes()))]

    def dec(parts: list[bytes], shape: tuple[int, int, int]) -> np.ndarray:
        return np.frombuffer(decode_bytes(parts[0]), np.uint8).reshape(shape)

    return enc, dec


def _webp_decode(data: bytes) -> np.ndarray:
    rgb = imagecodecs.webp_decode(data)
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise ValueError("WebP channels differ")
    return np.asarray(rgb[..., 0])


def _rgb(plane: np.ndarray) -> np.ndarray:
    return np.repeat(plane[..., None], 3, axis=2)


def classic_codecs(slow: bool = False) -> dict[str, tuple[Encoder, Decoder]]:
    """The classic lossless codecs, by display name (JPEG-XL effort 9 with ``slow``)."""
    effort = 9 if slow else 7
    return {
        "PNG": _slices(lambda s: imagecodecs.png_encode(s, level=9), imagecodecs.png_decode),
        REFERENCE: _slices(
            lambda s: imagecodecs.jpegxl_encode(s, lossless=True, effort=effort), imagecodecs.jpegxl_decode
        ),
        "JPEG-LS": _slices(lambda s: imagecodecs.jpegls_encode(s, level=0), imagecodecs.jpegls_decode),
        "JPEG 2000": _slices(
            lambda s: imagecodecs.jpeg2k_encode(s, level=0, reversible=True), imagecodecs.jpeg2k_decode
        ),
        "WebP": _slices(
            lambda s: imagecodecs.webp_encode(np.repeat(s[..., None], 3, axis=2), lossless=True, level=100),
            _webp_decode,
        ),
        "zstd -19": _raw(lambda b: imagecodecs.zstd_encode(b, level=19), imagecodecs.zstd_decode),
        "xz -9": _raw(lambda b: imagecodecs.lzma_encode(b, level=9), imagecodecs.lzma_decode),
    }


def blocks(volume: np.ndarray, shape: tuple[int, int, int]) -> Iterator[tuple[tuple[int, int, int], np.ndarray]]:
    """(origin, block) pairs covering the volume, edge blocks clipped."""
    for z in range(0, volume.shape[0], shape[0]):
        for y in range(0, volume.shape[1], shape[1]):
            for x in range(0, volume.shape[2], shape[2]):
                block = volume[z : z + shape[0], y : y + shape[1], x : x + shape[2]]
                yield (z, y, x), np.ascontiguousarray(block)


@dataclass
class CodecTotals:
    """Sums over the blocks of one volume for one codec."""

    compressed: int = 0
    raw: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0

    def add(self, compressed: int, raw: int, encode_s: float, decode_s: float) -> None:
        """Count one block."""
        self.compressed += compressed
        self.raw += raw
        self.encode_s += encode_s
        self.decode_s += decode_s


@dataclass
class BlockAnalysis:
    """emzip's view of one block: codec path, bits, per-slice and per-group rates."""

    origin: tuple[int, int, int]
    shape: tuple[int, int, int]
    codec: str
    reason: str
    bits_per_voxel: float
    bits_per_slice: list[float] | None = None
    bits_per_group: list[float] | None = None


@dataclass
class VolumeResult:
    """Everything measured on one volume."""

    name: str
    shape: tuple[int, ...]
    totals: dict[str, CodecTotals] = field(default_factory=dict)
    blocks: list[BlockAnalysis] = field(default_factory=list)
    figure_block: tuple[np.ndarray, bytes] | None = None
    batched_decode: dict[str, float] = field(default_factory=dict)
    """Decode MB/s of all of emzip's blocks at once, one torch thread, by batch size."""

    def rows(self) -> list[dict[str, Any]]:
        """One row per codec: bits per voxel, ratios, speeds, threads."""
        reference = self.totals[REFERENCE].compressed
        rows = []
        for name, t in self.totals.items():
            rows.append(
                {
                    "volume": self.name,
                    "codec": name,
                    "bits_per_voxel": 8.0 * t.compressed / t.raw,
                    "ratio_to_raw": t.raw / t.compressed,
                    "ratio_to_jpegxl": t.compressed / reference,
                    "encode_MBps": t.raw / 1e6 / max(t.encode_s, 1e-9),
                    "decode_MBps": t.raw / 1e6 / max(t.decode_s, 1e-9),
                    "threads": f"{torch.get_num_threads()} enc / 1 dec" if name == "emzip" else "1",
                }
            )
        return rows


def run_volume(
    name: str,
    volume: np.ndarray,
    settings: Settings,
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK,
    slow: bool = False,
    say: Callable[[str], None] = print,
) -> VolumeResult:
    """Code every block of ``volume`` with emzip and every classic codec; check every round trip."""
    if volume.dtype != np.uint8 or volume.ndim != 3:
        raise ValueError(f"{name}: emzip bench takes uint8 (z, y, x) volumes, got {volume.dtype} {volume.shape}")
    result = VolumeResult(name, tuple(volume.shape))
    codecs = classic_codecs(slow)
    warm = None
    emzip_blobs: list[tuple[np.ndarray, bytes]] = []
    for origin, block in blocks(volume, block_shape):
        started = time.perf_counter()
        encoded = encode(block, settings, warm_start=warm)
        encoded_s = time.perf_counter() - started
        with _one_thread():  # decoding is measured on one core, like the classic decoders
            started = time.perf_counter()
            restored = decompress(encoded.data)
            decoded_s = time.perf_counter() - started
        emzip_blobs.append((block, encoded.data))
        if not np.array_equal(restored, block):
            raise RuntimeError(f"{name} block {origin}: emzip round trip failed")
        warm = encoded.model_state or warm
        result.totals.setdefault("emzip", CodecTotals()).add(len(encoded.data), block.nbytes, encoded_s, decoded_s)
        analysis = BlockAnalysis(
            origin, block.shape, encoded.codec, encoded.reason, 8.0 * len(encoded.data) / block.size
        )
        # Per-voxel analysis reads format-v3 models; v4 blocks have none yet (issue 27 residual).
        if encoded.codec == "learned" and container.unpack(encoded.data).version == 3:
            voxels = analyse_learned(encoded.data, block)
            analysis.bits_per_slice = voxels.bits_per_slice()
            analysis.bits_per_group = voxels.bits_per_group()
            if result.figure_block is None:
                result.figure_block = (block, encoded.data)
        result.blocks.append(analysis)
        say(
            f"  {name} block {origin} {block.shape}: emzip {analysis.bits_per_voxel:.3f} bpv ({encoded.codec}), "
            f"encode {encoded_s:.1f} s, decode {decoded_s:.1f} s"
        )
        for codec_name, (enc, dec) in codecs.items():
            started = time.perf_counter()
            parts = enc(block)
            encoded_s = time.perf_counter() - started
            back = dec(parts, block.shape)
            decoded_s = time.perf_counter() - started - encoded_s
            if not np.array_equal(back, block):
                raise RuntimeError(f"{name} block {origin}: {codec_name} round trip failed")
            size = sum(len(p) for p in parts)
            result.totals.setdefault(codec_name, CodecTotals()).add(size, block.nbytes, encoded_s, decoded_s)
    result.batched_decode = batched_decode_rates(emzip_blobs)
    say(
        f"  {name} batched decode, one thread: "
        + ", ".join(f"{k}: {v:.2f} MB/s" for k, v in result.batched_decode.items())
    )
    return result


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def batched_decode_rates(coded: list[tuple[np.ndarray, bytes]], batches: tuple[int, ...] = (1, 8)) -> dict[str, float]:
    """MB/s of decoding every block with ``decompress_many`` at each batch size (one thread);
    every decoded block is compared with its original."""
    raw = sum(block.nbytes for block, _ in coded)
    rates = {}
    for batch in batches:
        with _one_thread():
            started = time.perf_counter()
            decoded = decompress_many([data for _, data in coded], batch=batch)
            seconds = time.perf_counter() - started
        if not all(np.array_equal(d, b) for d, (b, _) in zip(decoded, coded, strict=True)):
            raise RuntimeError("batched decoding differs from the blocks")
        rates[f"batch {batch}"] = raw / 1e6 / seconds
    return rates
