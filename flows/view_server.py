"""The HTTP server of ``emzip view --serve``: one OME-Zarr image, readable by any viewer.

Static files come from Starlette's ``StaticFiles`` under uvicorn (both arrive with Prefect), so
``Range`` (``206 Partial Content``: neuroglancer and TensorStore read shard indexes with it),
``HEAD``, ``ETag`` and ``Last-Modified`` are theirs, not hand-written. CORS comes from Starlette's
middleware: neuroglancer runs on another origin.

An archive (level 0 coded with emzip, ``tasks.datacenter.archive``) is served as a standard
OME-Zarr: the server rewrites level 0's ``zarr.json`` on the fly to a plain ``bytes`` + ``zstd``
array and answers each of its chunk keys with the chunk decoded and zstd-compressed on request
(``ArchiveChunks``). Decoded chunks are kept in a small on-disk cache, bounded in bytes, so a
viewer panning back and forth decodes each chunk once; the cache files are served by the same
static-file response, Range included. Nothing is written into the image.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SERVED_LEVEL_CODECS", "ArchiveChunks", "ServedImage", "build_app", "start_server"]

logger = logging.getLogger("emzip.view")

#: How an archive's level 0 is served: the plain codecs every zarr v3 reader has.
SERVED_LEVEL_CODECS: list[dict[str, Any]] = [
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "zstd", "configuration": {"level": 1, "checksum": False}},
]
#: Bytes of decoded, recompressed chunks kept on disk by default.
DEFAULT_CACHE_BYTES = 512 << 20


class ArchiveChunks:
    """Level 0 of an archive as a standard zarr v3 array: rewritten metadata, chunks decoded on request.

    ``metadata()`` is the archive's ``zarr.json`` with the emzip codec replaced by
    ``SERVED_LEVEL_CODECS``; ``chunk(index)`` is the path of a file holding that chunk so coded
    (None where the archive has no such chunk: zarr readers then use the fill value). A container
    that does not decode, or does not fit the array's chunk, raises ``ValueError`` naming it.
    """

    def __init__(self, level: Path, cache_dir: Path, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.level = level
        self.cache_dir = cache_dir
        self.cache_bytes = cache_bytes
        held = json.loads((level / "zarr.json").read_text())
        self._source_metadata = held
        self.chunk_shape = tuple(int(c) for c in held["chunk_grid"]["configuration"]["chunk_shape"])
        self.dtype = np.dtype(held["data_type"])
        self._cached: OrderedDict[tuple[int, ...], tuple[tuple[int, int, int] | None, int]] = OrderedDict()
        self._guard = threading.Lock()
        self._key_locks: dict[tuple[int, ...], threading.Lock] = {}
        self.decoded = 0

    def metadata(self) -> bytes:
        """Level 0's ``zarr.json`` as served: the same array, coded with ``SERVED_LEVEL_CODECS``."""
        held = json.loads((self.level / "zarr.json").read_text())  # re-read: the archive may have grown
        attributes = dict(held.get("attributes") or {})
        attributes["emzip_served"] = {"stored_codec": "emzip", "served_codecs": "bytes+zstd, decoded on request"}
        document = {**held, "codecs": SERVED_LEVEL_CODECS, "attributes": attributes}
        return json.dumps(document, indent=2).encode()

    def chunk(self, index: tuple[int, ...]) -> Path | None:
        """A file holding chunk ``index`` as ``SERVED_LEVEL_CODECS`` code it (decoded once, then cached).

        A cached chunk is served only while the archive's chunk file is the one it was decoded
        from (same inode, size and modification time: chunks are replaced by rename, so a block
        restored again while the server runs is decoded again).
        """
        source = self.level.joinpath("c", *(str(i) for i in index))
        try:
            stat = source.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        target = self.cache_dir.joinpath(*(str(i) for i in index))
        with self._guard:
            lock = self._key_locks.setdefault(index, threading.Lock())
        with lock:  # two requests for one chunk decode it once
            with self._guard:
                if self._cached.get(index, (None, 0))[0] == stamp and target.is_file():
                    self._cached.move_to_end(index)
                    return target
            data = self._served_bytes(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(data)
            os.replace(partial, target)
            with self._guard:
                self.decoded += 1
                self._cached[index] = (stamp, len(data))
                self._cached.move_to_end(index)
                self._evict(keep=index)
        return target

    def _served_bytes(self, source: Path) -> bytes:
        from numcodecs import Zstd

        from codec.api import decompress
        from codec.errors import EmzipError

        raw = source.read_bytes()
        limit = int(np.prod(self.chunk_shape)) * self.dtype.itemsize
        try:
            block = decompress(raw, max_bytes=limit)
        except EmzipError as exc:
            raise ValueError(f"{source}: does not decode: {exc}") from exc
        if (
            block.dtype.newbyteorder("=") != self.dtype.newbyteorder("=")
            or block.ndim != len(self.chunk_shape)
            or any(b > c for b, c in zip(block.shape, self.chunk_shape, strict=True))
        ):
            raise ValueError(
                f"{source}: holds {block.dtype}{list(block.shape)}, the chunks are {self.dtype}{list(self.chunk_shape)}"
            )
        chunk = np.zeros(self.chunk_shape, dtype=self.dtype.newbyteorder("<"))  # the fill value, as zarr pads
        chunk[tuple(slice(0, s) for s in block.shape)] = block
        return bytes(Zstd(level=1).encode(chunk.tobytes()))

    def _evict(self, keep: tuple[int, ...]) -> None:
        """Drop the least recently served chunks beyond ``cache_bytes`` (never the one just made)."""
        total = sum(size for _, size in self._cached.values())
        for index in list(self._cached):
            if total <= self.cache_bytes or index == keep:
                break
            total -= self._cached.pop(index)[1]
            self.cache_dir.joinpath(*(str(i) for i in index)).unlink(missing_ok=True)


class ServedImage:
    """What one ``emzip view --serve`` serves: the image folder, and its archive level when it has one."""

    def __init__(self, image: Path, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.image = image.resolve()
        self.name = self.image.name
        self._cache_root: Path | None = None
        self.archive: ArchiveChunks | None = None
        level0 = self.image / "0" / "zarr.json"
        if level0.is_file() and _is_emzip_coded(level0):
            self._cache_root = Path(tempfile.mkdtemp(prefix="emzip-view-"))
            self.archive = ArchiveChunks(self.image / "0", self._cache_root, cache_bytes)

    def close(self) -> None:
        """Remove the decoded-chunk cache."""
        if self._cache_root is not None:
            shutil.rmtree(self._cache_root, ignore_errors=True)


def _is_emzip_coded(metadata_path: Path) -> bool:
    try:
        codecs = json.loads(metadata_path.read_text()).get("codecs") or []
    except (OSError, ValueError):
        return False
    return any(isinstance(c, dict) and c.get("name") == "emzip" for c in codecs)


def build_app(served: ServedImage) -> Any:
    """The ASGI app: ``/<image name>/...`` as files, an archive's level 0 as a standard zarr array."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, PlainTextResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    prefix = f"/{served.name}"
    routes: list[Any] = []
    archive = served.archive
    if archive is not None:

        async def level_metadata(request: Request) -> Response:
            body = await run_in_threadpool(archive.metadata)
            return Response(body if request.method == "GET" else b"", media_type="application/json",
                            headers={"Content-Length": str(len(body))})  # fmt: skip

        async def level_chunk(request: Request) -> Response:
            index = tuple(int(request.path_params[axis]) for axis in ("z", "y", "x"))
            try:
                path = await run_in_threadpool(archive.chunk, index)
            except ValueError as exc:
                logger.error("%s", exc)
                return PlainTextResponse(f"chunk {list(index)}: {exc}", status_code=500)
            if path is None:
                return PlainTextResponse("no such chunk", status_code=404)
            return FileResponse(path, media_type="application/octet-stream")

        routes += [
            Route(f"{prefix}/0/zarr.json", level_metadata, methods=["GET", "HEAD"]),
            Route(f"{prefix}/0/c/{{z:int}}/{{y:int}}/{{x:int}}", level_chunk, methods=["GET", "HEAD"]),
        ]
    routes.append(Mount(prefix, app=StaticFiles(directory=served.image)))
    cors = Middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["Range", "If-None-Match", "If-Modified-Since"],
        expose_headers=["Content-Range", "Content-Length", "Accept-Ranges", "ETag", "Last-Modified"],
        max_age=3600,
    )
    return Starlette(routes=routes, middleware=[cors])


@contextlib.contextmanager
def start_server(served: ServedImage, host: str = "127.0.0.1", port: int = 8000) -> Iterator[str]:
    """Serve ``served`` under uvicorn in a background thread; yields the image's URL, stops on exit."""
    import time
    import urllib.parse

    import uvicorn

    config = uvicorn.Config(build_app(served), host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="emzip-view")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise OSError(f"cannot serve on {host}:{port} (address in use, or not an address of this machine)")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    try:
        yield f"http://{shown}:{bound[1]}/{urllib.parse.quote(served.name)}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        served.close()
