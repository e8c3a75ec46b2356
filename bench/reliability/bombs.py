"""Decompression bombs and malformed CONF sections, all with valid CRCs, and what each costs to refuse.

Each bomb is decoded in a fresh process (``measure``): time to the answer, peak resident memory
above the process's baseline after its imports, and whether the error was typed (``EmzipError``,
or ``RestoreError`` at the data center). The data-center case restores an 8x32x32 record whose
container's HEAD claims far more, through ``restore_block``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.reliability.harness import REPO


def _learned_parts() -> tuple[dict[str, object], bytes]:
    """CONF and MODL of a genuine learned container (a 4x64x64 block)."""
    from codec import Settings, compress
    from codec.container import unpack
    from flows.synthetic import em_like

    parsed = unpack(compress(em_like((4, 64, 64), seed=7), Settings(steps=5, codec="learned")))
    return parsed.config, parsed.model


def learned_bomb(shape: tuple[int, int, int], words: int = 4) -> bytes:
    """A learned container whose HEAD claims ``shape``, with one short stream per slice."""
    from codec.container import Container, Header, pack
    from codec.legacy.learned import SliceStream, pack_streams

    config, model = _learned_parts()
    streams = [SliceStream(np.full(words, 0x12345678, np.uint32), 0) for _ in range(shape[0])]
    return pack(Container(Header("learned", "|u1", shape, b"\0" * 32), config, model, pack_streams(streams)))


def jpegxl_header_bomb() -> bytes:
    """A JPEG-XL container whose HEAD claims ``<u2`` 1x131072x131072 (32 GiB) over a tiny payload."""
    from codec.container import Container, Header, pack

    payload = b"\x01\x00\x00\x00" + b"\x10\x00\x00\x00" + b"\xff\x0a" + b"\0" * 14
    return pack(Container(Header("jpegxl", "<u2", (1, 131072, 131072), b"\0" * 32), {}, b"", payload))


def jpegxl_frame_bomb(side: int = 16384) -> bytes:
    """A container whose HEAD claims 1x64x64 uint8 and whose frame is a ``side`` x ``side`` image."""
    import struct

    import imagecodecs

    from codec.container import Container, Header, pack

    frame = bytes(imagecodecs.jpegxl_encode(np.zeros((side, side), np.uint8), lossless=True, effort=1))
    payload = struct.pack("<II", 1, len(frame)) + frame
    return pack(Container(Header("jpegxl", "|u1", (1, 64, 64), b"\0" * 32), {}, b"", payload))


def original_dtype_bomb(dtype: str = "(100000000,)u1", data_dtype: type = np.uint8) -> bytes:
    """A genuine tiny lzma container whose CONF ``original_dtype`` is ``dtype`` (not what it holds)."""
    from codec import Settings, compress
    from codec.container import Container, pack, unpack

    parsed = unpack(compress(np.arange(8, dtype=data_dtype).reshape(1, 2, 4), Settings(codec="lzma")))
    return pack(Container(parsed.header, {"original_dtype": dtype}, b"", parsed.data))


def conf_bomb(conf_text: str) -> bytes:
    """A genuine lzma container with its CONF replaced by ``conf_text`` (CRCs recomputed)."""
    import struct
    import zlib

    from codec import Settings, compress
    from codec.container import _PREAMBLE, _SECTION_HEAD, MAGIC, _pack_head, unpack

    parsed = unpack(compress(np.arange(8, dtype=np.uint8).reshape(1, 2, 4), Settings(codec="lzma")))

    def section(tag: bytes, payload: bytes) -> bytes:
        return _SECTION_HEAD.pack(tag, len(payload)) + payload + struct.pack("<I", zlib.crc32(tag + payload))

    body = [
        section(b"HEAD", _pack_head(parsed.header)),
        section(b"CONF", conf_text.encode()),
        section(b"DATA", parsed.data),
        section(b"END\0", b""),
    ]
    return _PREAMBLE.pack(MAGIC, 3, 0, 4) + b"".join(body)


def bombs() -> dict[str, bytes]:
    """label -> container bytes."""
    return {
        "learned 1x2048x2048, 4-word stream": learned_bomb((1, 2048, 2048)),
        "learned 1x4096x4096, 4-word stream": learned_bomb((1, 4096, 4096)),
        "JPEG-XL HEAD <u2 1x131072x131072": jpegxl_header_bomb(),
        "JPEG-XL frame 16384^2 in a 1x64x64 block": jpegxl_frame_bomb(),
        "original_dtype (100000000,)u1": original_dtype_bomb(),
        "original_dtype |u1 on <u2 data": original_dtype_bomb("|u1", np.uint16),
        "original_dtype O (objects)": original_dtype_bomb("O"),
        "original_dtype U5 (strings)": original_dtype_bomb("<U5"),
        "CONF nested 100,000 deep": conf_bomb("[" * 100_000 + "]" * 100_000),
        "CONF 5000-digit integer": conf_bomb('{"original_dtype": ' + "9" * 5000 + "}"),
    }


@dataclass(frozen=True)
class BombOutcome:
    """What refusing one bomb cost, in a fresh process."""

    label: str
    seconds: float
    peak_mb_above_baseline: float
    error: str
    typed: bool
    refused: bool


_MEASURE = """
import json, resource, sys, time
from pathlib import Path
kind, path = sys.argv[1], Path(sys.argv[2])
from codec import decompress
from codec.errors import EmzipError
from tasks.datacenter.destination import RestoreError
import tasks.datacenter.restoring
if kind == "restore":
    from tasks.datacenter.restoring import find_received, prepare_targets, restore_block
    scan = find_received(path / "inbox", damaged_after=0)
    prepare_targets(scan.received, path / "restored", "volume")
    data = None
else:
    data = path.read_bytes()
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
error, typed = "", False
try:
    if kind == "restore":
        restore_block(scan.received[0], path / "restored")
    else:
        decompress(data)
except (EmzipError, RestoreError) as exc:
    error, typed = f"{type(exc).__name__}: {exc}"[:300], True
except BaseException as exc:
    error = f"{type(exc).__name__}: {exc}"[:300]
seconds = time.monotonic() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mb": (peak - baseline) / 1024, "error": error, "typed": typed}))
"""


def measure(label: str, kind: str, path: Path, timeout: float = 120.0) -> BombOutcome:
    """Refuse one bomb (``kind`` ``decode``: a container file; ``restore``: a work folder) in a new process."""
    try:
        completed = subprocess.run(
            [sys.executable, "-c", _MEASURE, kind, str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return BombOutcome(label, timeout, 0.0, "timed out", False, False)
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        return BombOutcome(label, 0.0, 0.0, f"exit {completed.returncode}: {completed.stderr[-300:]}", False, False)
    answer = json.loads(lines[-1])
    return BombOutcome(
        label,
        round(answer["seconds"], 3),
        round(answer["peak_mb"], 1),
        answer["error"],
        answer["typed"],
        bool(answer["error"]),
    )


def restore_bomb_folder(work: Path) -> Path:
    """An inbox holding an 8x32x32 record whose container (matching the record's sha256) claims 1x2048x2048."""
    import hashlib

    from flows.synthetic import em_like, write_inbox

    inbox = work / "inbox"
    [container] = write_inbox(em_like((8, 32, 32), seed=4), (8, 32, 32), inbox, codec={"steps": 0})
    record_path = container.with_name(container.stem + ".prov.json")
    record = json.loads(record_path.read_text())
    bomb = learned_bomb((1, 2048, 2048))
    container.write_bytes(bomb)
    record["encoding"]["compressed_sha256"] = hashlib.sha256(bomb).hexdigest()
    record["encoding"]["compressed_bytes"] = len(bomb)
    record_path.write_text(json.dumps(record))
    return work


def bomb_sweep(work: Path) -> list[BombOutcome]:
    """Every bomb of ``bombs()`` decoded, and the data-center case restored, each in a new process."""
    work.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for index, (label, data) in enumerate(bombs().items()):
        path = work / f"bomb{index}.emz"
        path.write_bytes(data)
        outcomes.append(measure(label, "decode", path))
    folder = restore_bomb_folder(work / "restore")
    outcomes.append(measure("data center: 8x32x32 record, HEAD claims 1x2048x2048", "restore", folder))
    return outcomes
