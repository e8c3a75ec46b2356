"""Prefect API clients share one verified TLS context per CA file; unverified ones stay their own."""

from __future__ import annotations

import importlib
import os
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

from flows import prefect_tls
from flows.prefect_tls import PATCHED_MODULES, share_verified_contexts, shared_ssl

API = "http://127.0.0.1:9/api"  # never contacted: building a client opens no connection


@pytest.fixture
def contexts_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ssl.SSLContext]]:
    """Share verified contexts for this test only, from an empty cache; yields every context
    ``ssl`` itself built meanwhile."""
    for name in PATCHED_MODULES:  # put back as they were when the test ends
        monkeypatch.setattr(importlib.import_module(name), "ssl", ssl)
    built: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        context = real(*args, **kwargs)  # type: ignore[arg-type]
        built.append(context)
        return context

    monkeypatch.setattr(ssl, "create_default_context", counting)
    prefect_tls._verified_context.cache_clear()
    assert share_verified_contexts() == list(PATCHED_MODULES)
    yield built
    prefect_tls._verified_context.cache_clear()


def _context_of(client: SyncPrefectClient | PrefectClient) -> ssl.SSLContext:
    context = client._client._transport._pool._ssl_context  # type: ignore[union-attr]
    assert isinstance(context, ssl.SSLContext)
    return context


def test_prefect_clients_share_one_verified_context(contexts_built: list[ssl.SSLContext]) -> None:
    first, second, other = SyncPrefectClient(API), SyncPrefectClient(API), PrefectClient(API)
    assert len(contexts_built) == 1, "the CA bundle was parsed more than once"
    shared = _context_of(first)
    assert _context_of(second) is shared and _context_of(other) is shared
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert shared.cert_store_stats()["x509_ca"] > 0  # the bundle's certificates, not an empty store


def test_unverified_contexts_are_built_fresh_and_never_shared(contexts_built: list[ssl.SSLContext]) -> None:
    verified = _context_of(SyncPrefectClient(API))
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        first, second = _context_of(SyncPrefectClient(API)), _context_of(SyncPrefectClient(API))
    assert first is not second and first.verify_mode == ssl.CERT_NONE == second.verify_mode
    # Prefect changed the unverified ones after building them; the shared one is untouched
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    assert _context_of(SyncPrefectClient(API)) is verified


def test_each_ca_file_has_its_own_context_and_a_rewritten_file_is_read_again(
    contexts_built: list[ssl.SSLContext], tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    shutil.copyfile(certifi.where(), bundle)
    with temporary_settings({PREFECT_API_SSL_CERT_FILE: str(bundle)}):
        own = _context_of(SyncPrefectClient(API))
        assert _context_of(SyncPrefectClient(API)) is own
        default = certifi.where()
        assert shared_ssl.create_default_context(cafile=default) is not own
        stat = bundle.stat()
        os.utime(bundle, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rotated in place
        assert _context_of(SyncPrefectClient(API)) is not own


def test_other_requests_go_to_ssl_itself(contexts_built: list[ssl.SSLContext], tmp_path: Path) -> None:
    plain = [shared_ssl.create_default_context() for _ in range(2)]
    client_side = [shared_ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certifi.where()) for _ in range(2)]
    assert plain[0] is not plain[1] and client_side[0] is not client_side[1]
    with pytest.raises(FileNotFoundError):  # a missing CA file is reported as ssl always did
        shared_ssl.create_default_context(cafile=str(tmp_path / "missing.pem"))
    assert shared_ssl.SSLContext is ssl.SSLContext and shared_ssl.CERT_NONE == ssl.CERT_NONE


def test_sharing_is_idempotent(contexts_built: list[ssl.SSLContext]) -> None:
    assert share_verified_contexts() == list(PATCHED_MODULES)
    for name in PATCHED_MODULES:
        assert importlib.import_module(name).ssl is shared_ssl
