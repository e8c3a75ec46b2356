"""``emzip view``: how a person opens a restored volume in neuroglancer, napari or Python.

By default it prints what to type: the neuroglancer source, the napari command, the zarr call.
``--serve`` serves the image's folder over HTTP with the CORS headers neuroglancer needs (the
standard library's server, nothing to install), so a browser on this machine or the facility's
network opens ``zarr3://http://HOST:PORT/<volume>.zarr/``.
"""

from __future__ import annotations

import functools
import json
import threading
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tasks.datacenter.omezarr import read_image

__all__ = ["CorsHandler", "describe", "neuroglancer_link", "serve"]

#: A public neuroglancer client; any other (a facility's own) takes the same URL fragment.
NEUROGLANCER = "https://neuroglancer-demo.appspot.com/"


class ViewError(Exception):
    """The path is not a restored volume that can be viewed; the message names it."""


def describe(path: Path, url: str | None = None) -> list[str]:
    """Lines that tell a person what ``path`` holds and how to open it (``url``: where it is served)."""
    metadata_path = path / "zarr.json"
    if not metadata_path.is_file():
        raise ViewError(f"{path}: no zarr.json here: not a restored volume")
    image = read_image(path)
    source = f"zarr3://{url}" if url else f"zarr3://file://{path.resolve()}/"
    lines = []
    if image is None:
        lines.append(f"{path}: a zarr v3 array (restored before OME-Zarr: no pyramid)")
    else:
        base = json.loads((path / "0" / "zarr.json").read_text())
        shapes = ", ".join("x".join(str(s) for s in level.shape) for level in image.levels)
        lines.append(f"{path}: OME-Zarr 0.5 image, {base['data_type']}, {len(image.levels)} levels ({shapes})")
        if image.archive:
            lines.append(
                "level 0 is an emzip archive (its chunks are emzip containers): zarr-python with emzip installed "
                "reads it; neuroglancer and napari cannot decode it and show levels 1 and up"
            )
    lines.append(f"neuroglancer source: {source}")
    if url:
        lines.append(f"neuroglancer: {neuroglancer_link(url, path.stem)}")
    else:
        lines.append(f"  (a browser cannot read file:// paths: `emzip view {path} --serve` serves it over HTTP)")
    lines.append(f"napari: napari --plugin napari-ome-zarr {path}")
    lines.append(f"python: zarr.open_group({str(path)!r}, mode='r')['0']")
    return lines


def neuroglancer_link(url: str, name: str) -> str:
    """A neuroglancer URL whose state holds one image layer reading ``url``."""
    state = {"layers": [{"type": "image", "source": f"zarr3://{url}", "name": name}], "layout": "xy"}
    return NEUROGLANCER + "#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")))


class CorsHandler(SimpleHTTPRequestHandler):
    """Static files with ``Access-Control-Allow-Origin: *`` (neuroglancer runs on another origin)."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "Range")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: neuroglancer asks for many chunks."""


def serve(path: Path, host: str = "127.0.0.1", port: int = 8000) -> tuple[ThreadingHTTPServer, str]:
    """Start serving ``path``'s folder in a background thread; returns the server and the image's URL."""
    handler = functools.partial(CorsHandler, directory=str(path.resolve().parent))
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    return server, f"http://{bound_host}:{bound_port}/{urllib.parse.quote(path.resolve().name)}/"
