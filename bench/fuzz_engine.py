"""Fuzz the compiled engine as a hostile sender would, under the sanitizers; and the engine against the spec.

    python -m bench.fuzz_engine [--cases 24000] [--models 1000] [--seed 1] [--no-asan]

Three parts, each a table in bench/RESULTS.md:

- **containers**: structure-aware mutations of valid v4 learned containers (the v4 goldens):
  HEAD's dimensions, CONF's engine settings, MODL's int32 fields and its xz stream, DATA's stripe
  table and words, with every CRC recomputed so that the mutation reaches the decoder, plus
  byte-level edits. Each goes through ``codec.decompress``.
- **direct calls**: ``codec._engine`` called with wrong types, out-of-range integers, malformed
  or misaligned tables, models and stripe lists.
- **reference**: random models spanning every field's allowed range (extremes included) and some
  just outside it; the engine and ``codec.v4.reference`` must both refuse a model, or both decode
  the engine's stream of a random block to that block.

The cases run in a subprocess on an engine built with UndefinedBehaviorSanitizer (and
AddressSanitizer, its runtime preloaded) that stops at the first report; a case that kills the
process is recorded as a crash with the sanitizer's report, and the run goes on after it. A case
passes when it decodes to HEAD's SHA-256 or ends in a typed error (``codec.errors`` or
ValueError/TypeError) within ``TIME_LIMIT`` seconds and ``MEMORY_LIMIT`` bytes above the worker's
baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import lzma
import random
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"
SEEDS = ("learned_v4.emz", "learned_gaussian_v4.emz", "learned_shift24_v4.emz")
#: Seconds a case may take: ``TIME_LIMIT``, or ``TIME_PER_MB`` per MB of container where that is more.
#: Decoding stops where the words end, so its time follows the bytes received, not the voxels
#: claimed; but a payload may legitimately code up to 800 voxels a byte (the density floor, 0.01
#: bits a voxel), and a model whose every voxel takes the narrowest table row (shift_scale 24)
#: decodes random words at a small fraction of a bit a voxel. The generated density-floor
#: containers (0.34 MB, up to 268M voxels claimed) decode 27M voxels before their words run out
#: with that model: 0.17 s, 0.5 s a MB.
TIME_LIMIT = 0.1
TIME_PER_MB = 1.0
MEMORY_LIMIT = 50 << 20
#: Integers a hostile header or model field would try.
EXTREMES = (0, 1, 2, 3, 7, 8, 23, 24, 25, 30, 31, 32, 63, 64, 65, 255, 256, 1023, 1024, 1025, 65535, 65536,
            65537, 1 << 21, 1 << 23, 1 << 26, (1 << 31) - 1, 1 << 31, 1 << 32, 1 << 40, 1 << 62, 1 << 63,
            (1 << 64) - 1)  # fmt: skip
INT32_EXTREMES = (-(1 << 31), -(1 << 30), -32768, -32767, -1, 0, 1, 5, 8, 23, 24, 25, 30, 64, 65, 128, 32767, 32768,
                  (1 << 30) - 1, 1 << 30, (1 << 31) - 1)  # fmt: skip
_PREAMBLE = struct.Struct("<8sHHI")
_SECTION = struct.Struct("<4sQ")
_HEAD = struct.Struct("<B8sB4Q32s")

Sections = list[tuple[bytes, bytes]]


# -- containers ------------------------------------------------------------------------------------


def split(blob: bytes) -> tuple[bytes, Sections]:
    """A valid container's preamble and its (tag, payload) sections."""
    preamble, at, sections = blob[: _PREAMBLE.size], _PREAMBLE.size, []
    while at < len(blob):
        tag, length = _SECTION.unpack_from(blob, at)
        at += _SECTION.size
        sections.append((tag, blob[at : at + length]))
        at += length + 4
    return preamble, sections


def join(preamble: bytes, sections: Sections) -> bytes:
    """Sections packed again, every CRC recomputed (the preamble's count set to the sections')."""
    magic, version, flags, _ = _PREAMBLE.unpack(preamble)
    body = b"".join(_SECTION.pack(t, len(p)) + p + struct.pack("<I", zlib.crc32(t + p)) for t, p in sections)
    return _PREAMBLE.pack(magic, version, flags, len(sections)) + body


def _pick(rng: random.Random, values: tuple[int, ...]) -> int:
    return rng.choice(values) if rng.random() < 0.8 else rng.randrange(0, 1 << rng.choice((8, 16, 24, 32, 64)))


def _head(payload: bytes, rng: random.Random) -> bytes:
    codec_id, dtype, ndim, *dims, sha = _HEAD.unpack(payload)
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(("dim", "dim", "dim", "ndim", "codec", "dtype"))
        if field == "dim":
            dims[rng.randrange(4)] = _pick(rng, EXTREMES) % (1 << 64)
        elif field == "ndim":
            ndim = rng.choice((0, 1, 2, 3, 4, 5, 255))
        elif field == "codec":
            codec_id = rng.choice((0, 1, 2, 3, 4, 255))
        else:
            dtype = rng.choice((b"|u1", b"<u2", b"|i1", b"<f8", b"|u1\0\0\0\0x", b"")).ljust(8, b"\0")
    return _HEAD.pack(codec_id, dtype, ndim, *dims, sha)


def _conf(payload: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.1:
        return rng.choice((b"", b"{", b"[]", b"null", b'{"engine": 1}', rng.randbytes(16)))
    config = json.loads(payload)
    engine = config.setdefault("engine", {})
    key = rng.choice(("stripes", "stripes", "family", "hidden", "delete", "engine"))
    values: list[Any] = [0, -1, 1, 2, 64, 65, 1 << 20, 1 << 63, "2", None, 2.5, [], {}, True]
    if key == "family":
        engine["family"] = rng.choice(("laplace", "gaussian", "cauchy", "", None, 1, "LAPLACE"))
    elif key == "delete" and engine:
        engine.pop(rng.choice(sorted(engine)))
    elif key == "engine":
        config["engine"] = rng.choice(values)
    else:
        engine[key] = rng.choice(values)
    return json.dumps(config).encode()


def _model(payload: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(("field", "field", "field", "weights", "resize", "junk", "truncate", "alone", "bomb", "raw"))
    if kind == "junk":
        return payload + rng.choice((b"\0", b"junk", rng.randbytes(rng.randint(1, 64)), payload))
    if kind == "truncate":
        return payload[: rng.randrange(len(payload))]
    if kind == "raw":
        return rng.randbytes(rng.randint(0, 256))
    array = np.frombuffer(lzma.decompress(payload), "<i4").astype(np.int64)
    if kind == "bomb":
        return lzma.compress(b"\0" * rng.choice((1 << 20, (1 << 20) + 4, 1 << 24)), preset=1)
    if kind == "field":
        for _ in range(rng.randint(1, 3)):
            array[rng.randrange(8 if rng.random() < 0.7 else array.size)] = rng.choice(INT32_EXTREMES)
    elif kind == "weights":
        for _ in range(rng.randint(1, 32)):
            array[rng.randrange(8, array.size)] = rng.choice(INT32_EXTREMES)
    elif kind == "resize":
        change = rng.choice((-8, -1, 1, 8, 64))
        array = array[:change] if change < 0 else np.concatenate([array, np.zeros(change, np.int64)])
    raw = array.astype("<i4").tobytes()
    if kind == "alone":
        return lzma.compress(raw, format=lzma.FORMAT_ALONE)
    return lzma.compress(raw, preset=1)


def _data(payload: bytes, rng: random.Random) -> bytes:
    count = struct.unpack_from("<I", payload, 0)[0]
    streams, at = [], 4
    for _ in range(count):
        _, words = struct.unpack_from("<II", payload, at)
        streams.append(payload[at + 8 : at + 8 + 4 * words])
        at += 8 + 4 * words
    kind = rng.choice(("words", "words", "random", "truncate", "extend", "count", "claim", "empty", "swap", "trail"))
    s = rng.randrange(len(streams))
    fix_crc = True
    if kind == "words" and streams[s]:
        stream = bytearray(streams[s])
        for _ in range(rng.randint(1, 8)):
            stream[rng.randrange(len(stream))] ^= 1 << rng.randrange(8)
        streams[s] = bytes(stream)
    elif kind == "random":
        streams[s] = rng.randbytes(4 * rng.randint(0, 2 * len(streams[s]) // 4 + 2))
    elif kind == "truncate":
        streams[s] = streams[s][: 4 * rng.randrange(len(streams[s]) // 4 + 1)]
    elif kind == "extend":
        streams[s] += rng.randbytes(4 * rng.randint(1, 64))
    elif kind == "empty":
        streams[s] = b""
    elif kind == "swap" and len(streams) > 1:
        streams.reverse()
    claims = [len(x) // 4 for x in streams]
    if kind == "claim":
        claims[s] = _pick(rng, EXTREMES) % (1 << 32)
        fix_crc = rng.random() < 0.5
    out = struct.pack("<I", (_pick(rng, EXTREMES) % (1 << 32)) if kind == "count" else len(streams))
    for stream, claim in zip(streams, claims, strict=True):
        crc = zlib.crc32(stream) if fix_crc else rng.getrandbits(32)
        out += struct.pack("<II", crc, claim) + stream
    if kind == "trail":
        out += rng.randbytes(rng.randint(1, 16))
    return out


def _bytes(blob: bytes, rng: random.Random) -> bytes:
    out = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out))
        choice = rng.random()
        if choice < 0.5:
            out[at] ^= 1 << rng.randrange(8)
        elif choice < 0.75:
            out[at : at + 4] = rng.randbytes(4)
        else:
            del out[at : at + rng.randint(1, 8)]
    return bytes(out)


def _floor_time_bomb(preamble: bytes, sections: Sections, rng: random.Random) -> bytes:
    """Many voxels claimed, random words just above the density floor: what made decoding slow."""
    head, conf, model, _, end = (p for _, p in sections)
    codec_id, dtype, _, _, _, _, _, sha = _HEAD.unpack(head)
    depth, rows, cols = rng.choice(((1024, 512, 512), (4096, 256, 256), (256, 1024, 1024), (64, 4096, 1024)))
    stripes = json.loads(conf)["engine"]["stripes"]
    from codec.v4.block import pack_streams

    per_stripe = [(s + 1) * rows // stripes - s * rows // stripes for s in range(stripes)]
    data = pack_streams([rng.randbytes(4 * _floor_words(depth * r * cols)) for r in per_stripe])
    new_head = _HEAD.pack(codec_id, dtype, 3, depth, rows, cols, 0, sha)
    return join(preamble, [(b"HEAD", new_head), (b"CONF", conf), (b"MODL", model), (b"DATA", data), (b"END\0", end)])


def container_cases(seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """``count`` (kind, container bytes) cases mutated from the v4 goldens."""
    rng = random.Random(seed)
    originals = [(GOLDEN / name).read_bytes() for name in SEEDS]
    mutate: dict[str, Callable[[bytes, random.Random], bytes]] = {
        "HEAD": _head,
        "CONF": _conf,
        "MODL": _model,
        "DATA": _data,
    }
    for index in range(count):
        original = rng.choice(originals)
        preamble, sections = split(original)
        kind = rng.choice(("HEAD", "CONF", "MODL", "MODL", "DATA", "DATA", "DATA", "bytes", "mixed"))
        if rng.random() < 0.02:  # a density-floor container of up to 3.4 MB: slow under the sanitizers
            kind = "floor"
        if index < 4:  # the untouched seeds, and the time bomb, come first
            kind = "seed" if index < len(originals) else "floor"
        if kind == "seed":
            yield kind, originals[index]
            continue
        if kind == "floor":
            yield kind, _floor_time_bomb(preamble, sections, rng)
            continue
        if kind == "bytes":
            blob = _bytes(original, rng)
            if rng.random() < 0.7:  # recompute CRCs where the structure still parses
                with contextlib.suppress(struct.error, ValueError):
                    blob = join(*split(blob))
            yield kind, blob
            continue
        targets = [kind] if kind != "mixed" else rng.sample(sorted(mutate), rng.randint(2, 3))
        edited = [(tag, mutate[tag.decode()](payload, rng) if tag.decode() in targets else payload)
                  for tag, payload in sections]  # fmt: skip
        yield kind, join(preamble, edited)


# -- direct engine calls -----------------------------------------------------------------------------


def direct_cases(seed: int, count: int) -> Iterator[tuple[str, Callable[[], object]]]:
    """``count`` (kind, call) cases of ``codec._engine`` called with hostile arguments."""
    import codec._engine as engine
    from codec.v4.tables import coder_tables

    rng = random.Random(seed)
    parsed = _seed_job()
    model = parsed.model.astype(np.int32)
    tables = coder_tables(parsed.family)
    shape = (2, 24, 20)
    block = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    stream = engine.encode_stripe(block, *shape, 0, shape[1], model, tables.cum, tables.lut)
    words = np.frombuffer(stream, np.uint32).copy()
    bad_values: list[Any] = [None, 1.5, "3", [], (), b"x", -1, 0, 1 << 31, 1 << 63, -(1 << 63), 1 << 70, True]

    def cum_variant() -> np.ndarray:
        cum = tables.cum.copy()
        row, at = rng.randrange(cum.shape[0]), rng.randrange(257)
        value = int(cum[row, at])
        cum[row, at] = rng.choice((0, value + 1, value - 1, 1 << 20, (1 << 32) - 1, rng.getrandbits(32))) % (1 << 32)
        if rng.random() < 0.3:
            cum[row, 1:] = cum[row, 0]  # a row of zero frequencies
        return cum

    def lut_variant() -> np.ndarray:
        lut = tables.lut.copy()
        for _ in range(rng.randint(1, 16)):
            lut[rng.randrange(lut.shape[0]), rng.randrange(lut.shape[1])] = rng.choice(
                (0, 255, (1 << 64) - 1, rng.getrandbits(64), 255 | (1 << 28) | (1 << 32))
            )
        return lut

    def model_variant() -> np.ndarray:
        variant = model.copy()
        for _ in range(rng.randint(1, 6)):
            variant[rng.randrange(variant.size)] = rng.choice(INT32_EXTREMES)
        return variant

    def unaligned(array: np.ndarray) -> memoryview:
        raw = bytearray(array.nbytes + 1)
        raw[1:] = array.tobytes()
        return memoryview(raw)[1:]

    for _ in range(count):
        kind = rng.choice(("types", "ints", "cum", "lut", "model", "stripes", "unaligned", "threads", "kernel"))
        out = np.zeros(shape, np.uint8)
        args: list[Any] = [out, *shape, model, tables.cum, tables.lut, [(0, shape[1], words)], 1]
        encode = rng.random() < 0.4
        if kind == "types":
            args[rng.randrange(len(args))] = rng.choice(bad_values)
        elif kind == "ints":
            args[rng.randint(1, 3)] = rng.choice([*bad_values[6:], 65536, 65537, 2])
        elif kind == "cum":
            args[5] = cum_variant()
        elif kind == "lut":
            args[6] = lut_variant()
        elif kind == "model":
            args[4] = model_variant() if rng.random() < 0.8 else model[: rng.randrange(model.size)]
        elif kind == "stripes":
            args[7] = rng.choice((
                [], [[0, shape[1], words]], [(0, shape[1])], [(0, shape[1], words, 1)], [(0, 12, words)],
                [(0, 12, words), (12, shape[1], words)], [(0, shape[1], b"")], [(0, shape[1], words[:1])],
                [(0, shape[1], words.tobytes()[:-1])], [(1, shape[1], words)], [(0, shape[1] + 1, words)],
                [(0, shape[1], None)], [(0, shape[1], "words")], [(1 << 40, 2, words)], (0, 1, 2), None,
            ))  # fmt: skip
            encode = False
        elif kind == "unaligned":
            position = rng.choice((4, 5, 6))
            args[position] = unaligned(np.asarray(args[position]))
        elif kind == "threads":
            args[8] = rng.choice((0, -5, 1000, 1 << 40, None, 2.0))
            encode = False
        if kind == "kernel":
            name = rng.choice(("portable", "auto", "avx3", "", None, 1))
            yield kind, lambda name=name: engine.use_kernel(name)
        elif encode:
            call = (args[0], args[1], args[2], args[3], 0, shape[1], args[4], args[5], args[6])
            if kind == "ints":
                call = (*call[:4], rng.choice(bad_values[6:]), *call[5:])
            yield kind, lambda call=call: engine.encode_stripe(*call)
        else:
            yield kind, lambda args=args: engine.decode_block(*args)
    engine.use_kernel("auto")


def _seed_job() -> Any:
    from codec import container
    from codec.v4 import block as v4_block

    parsed = container.unpack((GOLDEN / SEEDS[0]).read_bytes())
    return v4_block.parse(parsed.config, parsed.model, parsed.data, parsed.header.shape)


# -- the cases of issue 33, by name ------------------------------------------------------------------


def crafted(shape: tuple[int, ...], model: np.ndarray, stripes: int, words: int, seed: int = 0) -> bytes:
    """A v4 learned container with HEAD ``shape``, ``model`` (xz), and ``stripes`` random streams of
    ``words`` words each, every CRC right: what a hostile sender can write."""
    from codec import container

    rng = random.Random(seed)
    from codec.v4.block import pack_streams

    data = pack_streams([rng.randbytes(4 * words) for _ in range(stripes)])
    config = {"engine": {"family": "laplace", "stripes": stripes, "hidden": int(model[0])}}
    header = container.Header("learned", "|u1", shape, bytes(32))
    modl = lzma.compress(model.astype("<i4").tobytes(), preset=1)
    return container.pack(container.Container(header, config, modl, data))


def _floor_words(voxels: int) -> int:
    return int(voxels * 0.01 / 32) + 2


def issue_cases() -> list[tuple[str, Callable[[], object]]]:
    """Each finding of issue 33 as a call that must end in a typed error (fast, small)."""
    import codec._engine as engine
    from codec import decompress
    from codec.v4.tables import coder_tables

    job = _seed_job()
    model = job.model.astype(np.int32)
    wide = random_model(random.Random(64), True)
    while wide[0] != 64:
        wide = random_model(random.Random(int(wide[1]) + 1000 * int(wide[0])), True)
    narrow = model.copy()
    t = coder_tables(job.family)
    shape = (2, 24, 20)
    volume = np.zeros(shape, np.uint8)
    over = model.copy()
    over[8 + 3 * int(model[1]) + 2 * int(model[2])] = 32767  # a layer-1 weight: int16, but the sums pass 2**30
    over[8 + 3 * int(model[1]) + 2 * int(model[2]) + (int(model[1]) + int(model[2])) * int(model[0])] = (1 << 31) - 1
    cum = np.zeros_like(t.cum)  # right-sized tables of zeros: every frequency 0, every search runs off the row
    lut = np.zeros_like(t.lut)
    words = np.frombuffer(engine.encode_stripe(volume, *shape, 0, 24, model, t.cum, t.lut), np.uint32).copy()

    def head(shape3: tuple[int, ...]) -> bytes:  # streams long enough for the density floor, where it can be met
        voxels = int(np.prod(np.array(shape3, dtype=object)))
        return crafted(shape3, model, 1, _floor_words(voxels) if voxels < 1 << 32 else 16)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("2: HEAD (1, 2**21), hidden 64", lambda: decompress(crafted((1, 1 << 21), wide, 1, _floor_words(1 << 21)))),
        ("2: HEAD (1, 2**23), hidden 8", lambda: decompress(crafted((1, 1 << 23), narrow, 1, _floor_words(1 << 23)))),
        ("2: HEAD (1, 2**26)", lambda: decompress(crafted((1, 1 << 26), narrow, 1, _floor_words(1 << 26)))),
        ("3: 256M voxels at the density floor", lambda: decompress(
            crafted((1024, 512, 512), model, 4, _floor_words(1024 * 128 * 512))
        )),
        ("4: HEAD (0, 2**40, 64)", lambda: decompress(head((0, 1 << 40, 64)))),
        ("4: HEAD (0, 2**63, 64)", lambda: decompress(head((0, 1 << 63, 64)))),
        ("4: HEAD (1, 1, 2**31)", lambda: decompress(head((1, 1, 1 << 31)))),
        ("4: HEAD (1, 1, 2**31 - 1)", lambda: decompress(head((1, 1, (1 << 31) - 1)))),
        ("1: model sums over 2**30, engine called directly", lambda: engine.encode_stripe(
            volume, *shape, 0, 24, over, t.cum, t.lut
        )),
        ("5: invalid cum and lut, right size", lambda: engine.decode_block(
            volume, *shape, model, cum, lut, [(0, 24, words)], 1
        )),
        ("5: zero frequencies in encode_stripe", lambda: engine.encode_stripe(
            volume, *shape, 0, 24, model, cum, t.lut
        )),
        ("5: a list where a tuple is expected", lambda: engine.decode_block(
            volume, *shape, model, t.cum, t.lut, [[0, 24, words]], 1
        )),
        ("6: junk after MODL's xz stream", lambda: decompress(_with_junk_model((GOLDEN / SEEDS[0]).read_bytes()))),
    ]  # fmt: skip
    return cases


def _with_junk_model(blob: bytes) -> bytes:
    preamble, sections = split(blob)
    return join(preamble, [(tag, payload + b"junk" if tag == b"MODL" else payload) for tag, payload in sections])


# -- the engine against the reference ------------------------------------------------------------


def random_model(rng: random.Random, inside: bool = True) -> np.ndarray:
    """A MODL array: every field drawn over its allowed range (extremes often), sums within bounds;
    with ``inside`` False, one field just outside its range or the sums over the bound."""
    from codec.distributions import N_SCALES
    from codec.v4.freeze import SUM_LIMIT

    def draw(low: int, high: int) -> int:
        return rng.choice((low, high, rng.randint(low, high)))

    hidden = 8 * draw(1, 8)
    previous = [(dz, dy, dx) for dz in (1, 2) for dy in range(-3, 4) for dx in range(-3, 4)]
    current = [(dy, dx) for dy in range(-3, 0) for dx in range(-3, 4)] + [(0, dx) for dx in range(-3, 0)]
    n_prev, n_cur = draw(0, 64), draw(0, len(current))
    prev, cur = rng.sample(previous, n_prev), rng.sample(current, n_cur)
    shifts = [draw(1, 24), draw(1, 24), draw(5, 24), draw(1, 24)]
    inputs = n_prev + n_cur

    def weights(n: int, limit: int) -> np.ndarray:
        return np.array([rng.randint(-limit, limit) for _ in range(n)], np.int64)

    w1 = weights(inputs * hidden, 32767).reshape(inputs, hidden)
    b1 = weights(hidden, 1 << 30)
    w2 = weights(hidden * hidden, 32767).reshape(hidden, hidden)
    b2 = weights(hidden, 1 << 30)
    w3 = weights(2 * hidden, 1 << 20).reshape(2, hidden)
    b3 = weights(2, 1 << 30)
    skip = weights(inputs, 32767)
    skip_bias = rng.randint(-(1 << 30), 1 << 30)

    def fit(row_sums: np.ndarray, bias: np.ndarray) -> float:
        worst = float((row_sums + np.abs(bias)).max(initial=0))
        return 1.0 if worst < SUM_LIMIT else (SUM_LIMIT - 1) / worst * rng.choice((0.999, 0.5, 0.01))

    scale1 = fit(np.abs(w1).sum(axis=0) * 128, b1)
    w1, b1 = np.trunc(w1 * scale1), np.trunc(b1 * scale1)
    scale2 = fit(np.abs(w2).sum(axis=0) * 255, b2)
    w2, b2 = np.trunc(w2 * scale2), np.trunc(b2 * scale2)
    mean_sum = np.array([np.abs(skip).sum() * 128 + np.abs(w3[0]).sum() * 255 + abs(skip_bias)])
    scale_m = fit(mean_sum, np.array([abs(b3[0])]))
    skip, w3[0], skip_bias, b3[0] = (
        np.trunc(skip * scale_m),
        np.trunc(w3[0] * scale_m),
        int(skip_bias * scale_m),
        int(b3[0] * scale_m),
    )
    scale_s = fit(np.array([np.abs(w3[1]).sum() * 255]), np.array([abs(b3[1])]))
    w3[1], b3[1] = np.trunc(w3[1] * scale_s), int(b3[1] * scale_s)
    header = [hidden, n_prev, n_cur, *shifts, N_SCALES]
    if not inside:
        field = rng.choice(("hidden", "shift1", "shift2", "shift_mean", "shift_scale", "sum", "scales"))
        if field == "hidden":
            header[0] = rng.choice((0, 4, 12, 72))
        elif field == "scales":
            header[7] = rng.choice((N_SCALES - 1, N_SCALES + 1, 0))
        elif field == "sum":
            b1[0] = (1 << 31) - 1
        else:
            index = {"shift1": 3, "shift2": 4, "shift_mean": 5, "shift_scale": 6}[field]
            header[index] = rng.choice((0, 25, 31, -1) if field != "shift_mean" else (4, 25, 30))
    parts = [np.array(header), np.array(prev).reshape(-1), np.array(cur).reshape(-1), w1.reshape(-1), b1,
             w2.reshape(-1), b2, w3.reshape(-1), b3, skip, np.array([skip_bias])]  # fmt: skip
    return np.concatenate([np.asarray(p, np.int64).reshape(-1) for p in parts]).astype(np.int32)


def reference_case(rng: random.Random, inside: bool) -> str:
    """One random model and block: 'both decoded', 'both refused', or what disagreed (a string)."""
    from codec.v4 import engine, reference
    from codec.v4.freeze import BoundError, check_bounds

    model = random_model(rng, inside)
    family = rng.choice(("laplace", "gaussian"))
    shape = (rng.randint(1, 3), rng.randint(1, 6), rng.randint(1, 7))
    block = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, shape, dtype=np.uint8)
    if rng.random() < 0.5:  # a smooth block: the model's mean matters
        block = np.clip(np.cumsum(block.astype(np.int64) % 5 - 2, axis=2) + 128, 0, 255).astype(np.uint8)
    stripes = rng.randint(1, min(3, shape[1]))
    try:
        check_bounds(model)
        reference_refuses = False
    except BoundError:
        reference_refuses = True
    try:
        streams = engine.encode_block(block, model, family, stripes)
    except ValueError:
        return "both refused" if reference_refuses else f"engine refused a model the reference accepts: {model[:8]}"
    if reference_refuses:
        return f"engine accepted a model the reference refuses: {model[:8]}"
    decoded = engine.decode_blocks([(streams, shape, model, family)])[0]
    if not np.array_equal(decoded, block):
        return f"engine does not round-trip: {model[:8]}"
    try:
        spec = reference.decode(streams, shape, model, family)
    except (ValueError, IndexError) as exc:
        return f"reference refuses the engine's stream ({exc}): {model[:8]}"
    return "both decoded" if np.array_equal(spec, block) else f"reference decodes otherwise: {model[:8]}"


# -- running cases in a sanitized worker -----------------------------------------------------------------

#: Run in the worker (``codec`` there is the sanitized build): cases [start, stop) of one part,
#: one JSON line per case on stdout, flushed before the next begins.
_WORKER = """
import json, resource, sys, time, random
from bench import fuzz_engine as f
part, seed, count, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
f.run_worker(part, seed, count, start)
"""


def _rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(part: str, seed: int, count: int, start: int) -> None:
    """Run cases ``start`` .. ``count`` of ``part`` here, printing one JSON line each (for ``run_part``)."""
    import time

    from codec import decompress
    from codec.errors import EmzipError
    from codec.v4 import tables

    tables.warm()
    if part == "containers":
        for blob in (GOLDEN / s for s in SEEDS):
            decompress(blob.read_bytes())
    baseline = _rss()
    rng = random.Random(seed * 7919 + start)
    cases: Iterator[tuple[str, Any]]
    if part == "containers":
        cases = container_cases(seed, count)
    elif part == "issue":
        cases = iter(issue_cases())
    elif part == "direct":
        cases = direct_cases(seed, count)
    else:
        cases = ((("inside" if i % 5 else "outside"), i) for i in range(count))
    for index, (kind, case) in enumerate(cases):
        if index < start:
            continue
        print(json.dumps({"index": index, "kind": kind, "started": True}), flush=True)
        began = time.perf_counter()
        error = ""
        try:
            if part == "containers":
                decompress(case)
                outcome = "decoded"
            elif part in ("direct", "issue"):
                case()
                outcome = "accepted"
            else:
                verdict = reference_case(rng, kind == "inside")
                outcome = verdict if verdict in ("both decoded", "both refused") else "disagree"
                error = "" if outcome != "disagree" else verdict
        except (EmzipError, ValueError, TypeError) as exc:
            outcome = "refused"
            error = f"{type(exc).__name__}: {exc}"[:200]
        except Exception as exc:
            outcome = "untyped"
            error = f"{type(exc).__name__}: {exc}"[:300]
        seconds = time.perf_counter() - began
        line = {
            "index": index,
            "kind": kind,
            "outcome": outcome,
            "seconds": seconds,
            "memory": _rss() - baseline,
            "bytes": len(case) if isinstance(case, bytes) else 0,
        }
        if error and (outcome != "refused" or index % 97 == 0):
            line["error"] = error
        print(json.dumps(line), flush=True)


def run_part(engine: Any, part: str, seed: int, count: int, preload: str | None) -> dict[str, Any]:
    """Every case of ``part`` on ``engine`` (a ``bench.engine_builds.Build``), going on after crashes."""
    from bench.engine_builds import run_on

    results: list[dict[str, Any]] = []
    crashes: list[dict[str, Any]] = []
    start = 0
    while start < count:
        done = run_on(engine, _WORKER, part, str(seed), str(count), str(start), timeout=3600, preload=preload)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        finished = [line for line in lines if "outcome" in line]
        results.extend(finished)
        started = [line for line in lines if line.get("started")]
        if done.returncode == 0 and (not started or len(finished) == len(started)):
            break
        crashed = started[-1]["index"] if started else start
        crashes.append({"index": crashed, "kind": started[-1]["kind"] if started else "?",
                        "returncode": done.returncode, "report": done.stderr[-3000:]})  # fmt: skip
        start = crashed + 1
    return {"results": results, "crashes": crashes}


def summarize(part: str, outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per kind of case: how many, how they ended, the slowest and the largest."""
    rows: dict[str, dict[str, Any]] = {}
    for line in outcome["results"]:
        row = rows.setdefault(line["kind"], {"part": part, "kind": line["kind"], "cases": 0, "max_seconds": 0.0,
                                             "max_memory_mb": 0.0, "crashes": 0})  # fmt: skip
        row["cases"] += 1
        row[line["outcome"]] = row.get(line["outcome"], 0) + 1
        row["max_seconds"] = max(row["max_seconds"], line["seconds"])
        row["max_mb"] = max(row.get("max_mb", 0.0), line.get("bytes", 0) / 1e6)
        row["max_memory_mb"] = max(row["max_memory_mb"], line["memory"] / 2**20)
    for crash in outcome["crashes"]:
        row = rows.setdefault(crash["kind"], {"part": part, "kind": crash["kind"], "cases": 0, "max_seconds": 0.0,
                                              "max_memory_mb": 0.0, "crashes": 0})  # fmt: skip
        row["cases"] += 1
        row["crashes"] += 1
    return sorted(rows.values(), key=lambda r: r["kind"])


def failures(part: str, outcome: dict[str, Any], limits: bool) -> list[str]:
    """What breaks the rules: crashes, untyped errors, disagreements, and (``limits``) cases over the
    time or memory limit, or an issue case that was accepted."""
    found = [f"{part} case {c['index']} ({c['kind']}) killed the worker ({c['returncode']}):\n{c['report']}"
             for c in outcome["crashes"]]  # fmt: skip
    for line in outcome["results"]:
        if line["outcome"] in ("untyped", "disagree") or (part == "issue" and line["outcome"] == "accepted"):
            found.append(f"{part} case {line['index']} ({line['kind']}): {line['outcome']}: {line.get('error')}")
        elif limits and (
            line["seconds"] > max(TIME_LIMIT, TIME_PER_MB * line["bytes"] / 1e6) or line["memory"] > MEMORY_LIMIT
        ):
            found.append(f"{part} case {line['index']} ({line['kind']}): {line['seconds']:.3f} s, "
                         f"{line['memory'] / 2**20:.1f} MB above the baseline")  # fmt: skip
    return found


def _table(rows: list[dict[str, Any]]) -> str:
    columns = ["part", "kind", "cases", "decoded", "accepted", "both decoded", "both refused", "refused", "untyped",
               "disagree", "crashes", "max_seconds", "max_mb", "max_memory_mb"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row.get(c, 0):.3f}" if isinstance(row.get(c, 0), float) else str(row.get(c, 0)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench import engine_builds

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=24_000, help="container cases (direct calls: a quarter as many)")
    parser.add_argument("--models", type=int, default=1_000, help="random models against the reference")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-asan", action="store_true", help="UBSan only (no AddressSanitizer runtime preloaded)")
    parser.add_argument("--json", type=Path, default=Path("bench/results_fuzz_engine.json"))
    args = parser.parse_args(argv)
    rows, problems, labels = [], [], []
    with tempfile.TemporaryDirectory(prefix="emzip-fuzz-") as folder:
        # 1. Sanitized: any undefined behaviour or bad access kills the worker (a crash in the table).
        preload = None if args.no_asan else engine_builds.asan_runtime()
        flags = engine_builds.UBSAN if preload is None else engine_builds.ASAN
        sanitized = engine_builds.build(Path(folder) / "sanitized", flags)
        labels.append(sanitized.label + (" (runtime preloaded)" if preload else ""))
        # 2. Plain -O3, as installed: the time and memory each case costs.
        plain = engine_builds.build(Path(folder) / "plain", engine_builds.O3)
        labels.append(plain.label)
        runs = [(sanitized, preload, "containers", args.cases), (sanitized, preload, "direct", args.cases // 4),
                (sanitized, preload, "issue", 0), (sanitized, preload, "reference", args.models),
                (plain, None, "containers", args.cases), (plain, None, "issue", 0)]  # fmt: skip
        for engine, runtime, part, count in runs:
            count = count or len(issue_cases())
            outcome = run_part(engine, part, args.seed, count, runtime)
            name = f"{part} ({'sanitized' if engine is sanitized else 'plain -O3'})"
            rows += summarize(name, outcome)
            found = failures(name, outcome, limits=engine is plain)
            problems += found
            print(f"{name}: {count} cases, {len(found)} problems", flush=True)
    print("engines: " + "; ".join(labels))
    print(_table(rows))
    args.json.write_text(json.dumps({"engines": labels, "rows": rows, "problems": problems[:50]}, indent=1) + "\n")
    for problem in problems[:20]:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
