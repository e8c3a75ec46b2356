"""Learned coding of uint8 blocks in format v3: lattice groups, exact float32 model, windows.

The encoder knows every voxel, so it evaluates the frozen model on many slices at once; the
decoder marches slice by slice and, inside a slice, group by group (:mod:`codec.legacy.lattice`):
five model calls and five coder steps per slice whatever its size, each over a whole group,
and for many blocks at once (their models stacked, :class:`codec.legacy.frozen.BatchedModel`). One
ANS stream per slice with the CRC32 of the slice it decodes to (:mod:`codec.legacy.learned`'s
framing), so a mismatch is reported at the slice where it happens.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import torch

from codec.errors import CorruptDataError
from codec.legacy import lattice
from codec.legacy.entropy import StreamDecoder, decode_group, encode_groups
from codec.legacy.frozen import BatchedModel, FrozenModel
from codec.legacy.learned import SliceStream

#: Slices the encoder evaluates together (bounds memory: about 10 MB per 256x256 slice).
ENCODE_CHUNK = 8


def _centred(volume: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(volume, device=device).to(torch.float32) - lattice.CENTER


def block_parameters(
    model: FrozenModel, volume: np.ndarray, device: torch.device | None = None, chunk: int = ENCODE_CHUNK
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per slice, per group, the (mean16, scale index) of its voxels in stream order (int64)."""
    device = device or torch.device("cpu")
    batched = BatchedModel([model], device)
    z, h, w = volume.shape
    centred = _centred(volume, device)
    previous = lattice.previous_slices(centred, model.arch.k)
    out: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for first in range(0, z, chunk):
        last = min(first + chunk, z)
        n = last - first
        features = batched.trunk_features(previous[first:last].unsqueeze(0))[0]  # (n, C, H, W)
        planes = lattice.pad(torch.stack([previous[first:last, 0], centred[first:last]], dim=1))
        per_group = []
        for g in range(len(lattice.GROUPS)):
            raw = lattice.neighbours_at_group(planes, g, h, w)  # (n, R, m)
            x = torch.cat([lattice.gather(features, g), raw], dim=1)  # (n, F, m)
            m = x.shape[-1]
            mean16, scale = batched.head(g, x.permute(1, 0, 2).reshape(1, x.shape[1], n * m))
            per_group.append((mean16.reshape(n, m).cpu().numpy(), scale.reshape(n, m).cpu().numpy()))
        for i in range(n):
            out.append([(mg[i].astype(np.int64), sg[i].astype(np.int64)) for mg, sg in per_group])
    return out


def encode_block(model: FrozenModel, volume: np.ndarray, device: torch.device | None = None) -> list[SliceStream]:
    """Code a uint8 (Z, H, W) block into one stream per slice."""
    parameters = block_parameters(model, volume, device)
    plane_t = torch.as_tensor(volume)
    streams = []
    for z, groups in enumerate(parameters):
        coded = [
            (lattice.gather(plane_t[z], g).numpy().astype(np.int64), mean16, scale)
            for g, (mean16, scale) in enumerate(groups)
        ]
        words = encode_groups(model.arch.family, coded)
        streams.append(SliceStream(words, zlib.crc32(volume[z].tobytes())))
    return streams


def decode_blocks(
    models: list[FrozenModel],
    streams: list[list[SliceStream]],
    shape: tuple[int, int, int],
    device: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Decode several blocks of one shape and architecture together (one model call per group
    for all of them); raises CorruptDataError naming the block and slice that fails."""
    device = device or torch.device("cpu")
    batched = BatchedModel(models, device)
    b = len(models)
    z_count, h, w = shape
    k = batched.arch.k
    out = np.empty((b, *shape), np.uint8)
    history = torch.zeros((b, 1, k, h, w), dtype=torch.float32, device=device)  # newest first
    pad = lattice.PAD
    # planes[:, 0]: the previous slice, planes[:, 1]: the slice being decoded (zero = not yet).
    planes = torch.zeros((b, 2, h + 2 * pad, w + 2 * pad), dtype=torch.float32, device=device)
    for z in range(z_count):
        features = batched.trunk_features(history)[:, 0]  # (B, C, H, W)
        current = planes[:, 1]
        decoders = [StreamDecoder(m.arch.family, s[z].words, "windows") for m, s in zip(models, streams, strict=True)]
        for g in range(len(lattice.GROUPS)):
            raw = lattice.neighbours_at_group(planes, g, h, w)
            x = torch.cat([lattice.gather(features, g), raw], dim=1)
            mean16, scale = batched.head(g, x)
            means, scales = mean16.cpu().numpy().astype(np.int64), scale.cpu().numpy().astype(np.int64)
            values = np.stack([decode_group(d, means[i], scales[i]) for i, d in enumerate(decoders)])
            centred = torch.as_tensor(values - lattice.CENTER, dtype=torch.float32, device=device)
            lattice.scatter_padded(current, g, h, w, centred)
        interior = current[:, pad : pad + h, pad : pad + w]
        plane = (interior + lattice.CENTER).to(torch.uint8).cpu().numpy()
        for i, decoder in enumerate(decoders):
            out[i, z] = plane[i]
            if zlib.crc32(plane[i].tobytes()) != streams[i][z].crc32 or not decoder.is_exhausted():
                raise CorruptDataError(
                    f"block {i} slice {z} did not decode to its recorded CRC32: stream or model damaged"
                )
        if k > 0:
            history = torch.roll(history, 1, dims=2)
            history[:, 0, 0] = interior
        planes[:, 0] = current
        planes[:, 1] = 0
        if progress is not None:
            progress(z + 1, z_count)
    return list(out)
