"""One verified TLS context per CA file for the Prefect API clients of this process.

Prefect 3.8 builds new API clients for every task run a Dask worker executes (two per task: the
hydrated flow context's and the task engine's; three more when the worker's event and log
services start), and each client builds its TLS context by parsing the whole CA bundle:
``ssl.create_default_context(cafile=...)``, 16 ms here, paid whether or not the API is reached
over TLS. In a restore worker that was the largest cost outside decoding: on 2 workers restoring
32 FlyEM blocks, Prefect's event-loop thread took 0.10-0.13 s per worker with it and 0.03-0.05 s
without, and it runs beside the other worker's decoding (bench/RESULTS.md, "Restore on Dask").

``share_verified_contexts()`` gives the Prefect modules that build those contexts a view of
``ssl`` whose ``create_default_context`` returns one shared context per CA file (keyed by its
path, size and modification time, so a rotated bundle is read again) when asked for a verified
server-authentication context from a file; every other call, the unverified contexts that
``PREFECT_API_TLS_INSECURE_SKIP_VERIFY`` builds and then changes among them, goes to ``ssl``
itself and is never shared. Verification is unchanged: the same CA file, ``CERT_REQUIRED``,
host names checked. Neither Prefect nor httpx changes a verified context it is given (httpx would
only for its deprecated ``cert=`` argument, which Prefect does not pass). Upstream, Prefect lets
a caller pass its own context through ``httpx_settings["verify"]``; its task engine does not.
"""

from __future__ import annotations

import importlib
import os
import ssl
import types
from functools import lru_cache
from typing import Any

__all__ = ["PATCHED_MODULES", "share_verified_contexts", "shared_ssl"]

#: The Prefect modules (prefect==3.8.8) that build a verified context for every client they make.
PATCHED_MODULES = ("prefect.client.orchestration", "prefect._internal.version_checking")


@lru_cache(maxsize=8)
def _verified_context(cafile: str, size: int, mtime_ns: int) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)


def _create_default_context(
    purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
    *,
    cafile: str | os.PathLike[str] | None = None,
    capath: str | os.PathLike[str] | None = None,
    cadata: Any = None,
) -> ssl.SSLContext:
    """``ssl.create_default_context``, with verified contexts from one CA file shared."""
    if purpose is ssl.Purpose.SERVER_AUTH and cafile is not None and capath is None and cadata is None:
        path = os.fspath(cafile)
        try:
            stat = os.stat(path)
        except OSError:
            pass  # let ssl report the missing or unreadable file as it always has
        else:
            return _verified_context(path, stat.st_size, stat.st_mtime_ns)
    return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)


class _SharedVerifiedSsl(types.ModuleType):
    """The ``ssl`` module as the patched Prefect modules see it: everything but
    ``create_default_context`` is ``ssl``'s own."""

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)


shared_ssl = _SharedVerifiedSsl("ssl")
shared_ssl.create_default_context = _create_default_context  # type: ignore[attr-defined]


def share_verified_contexts() -> list[str]:
    """Point ``PATCHED_MODULES`` at ``shared_ssl``; returns the modules now sharing (idempotent).

    A module that no longer refers to ``ssl`` (another Prefect release) is left alone: the
    clients then cost what they cost, nothing breaks. ``tests/test_prefect_tls.py`` fails on the
    pinned release if a module stops being patched.
    """
    patched = []
    for name in PATCHED_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "ssl", None) is ssl:
            module.ssl = shared_ssl  # type: ignore[attr-defined]
        if getattr(module, "ssl", None) is shared_ssl:
            patched.append(name)
    return patched
