"""Transfer backends: LocalTransfer on real files, GlobusTransfer against globus_sdk.testing responses."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path
from typing import BinaryIO

import globus_sdk
import pytest
import responses
from globus_sdk.testing import RegisteredResponse, get_last_request, load_response
from globus_sdk.transport import RetryConfig

from tasks.transfer import (
    ConsentRequiredError,
    GlobusSettings,
    GlobusTransfer,
    LocalTransfer,
    OutboxFile,
    PermanentTransferError,
    TransferBatch,
    TransferInactiveError,
    TransientTransferError,
    prune_outbox,
    transfer_client_from_credentials,
)

TASK = str(uuid.UUID(int=7))
SETTINGS = GlobusSettings(
    source_collection=str(uuid.UUID(int=1)),
    destination_collection=str(uuid.UUID(int=2)),
    source_root="/edge/outbox",
    destination_root="/dc/inbox",
    poll_seconds=0.0,
    timeout_seconds=30.0,
)
SECRET = "s3cr3t-never-logged-0123456789"


def _batch(tmp_path: Path, count: int = 2) -> TransferBatch:
    files = []
    for i in range(count):
        path = tmp_path / "outbox" / "vol" / f"z{i:04d}.emz"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = bytes([i]) * (1000 + i)
        path.write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        files.append(OutboxFile(path, digest, len(payload), f"vol/z{i:04d}.emz", f"vol/z{i:04d}_y0000_x0000"))
    return TransferBatch("vol-batch-0001", "vol", tuple(files))


# -- LocalTransfer -----------------------------------------------------------------------------


def test_local_transfer_copies_verifies_and_is_idempotent(tmp_path: Path) -> None:
    batch = _batch(tmp_path)
    backend = LocalTransfer(tmp_path / "dc")
    report = backend.transfer(batch, backend.new_submission_id())
    assert report.status == "SUCCEEDED" and all(r.verified for r in report.files)
    for item in batch.files:
        assert (tmp_path / "dc" / item.relative_path).read_bytes() == item.path.read_bytes()
    again = backend.transfer(batch, report.submission_id)
    assert again.bytes_transferred == 0  # already there with the right checksum: nothing copied twice
    assert not list((tmp_path / "dc").rglob("*.part"))


def test_local_transfer_detects_a_corrupted_copy(tmp_path: Path) -> None:
    def corrupting(source: BinaryIO, sink: BinaryIO) -> None:
        data = bytearray(source.read())
        data[10] ^= 0x01
        sink.write(data)

    batch = _batch(tmp_path, 1)
    target = tmp_path / "dc" / batch.files[0].relative_path
    with pytest.raises(PermanentTransferError, match="checksum mismatch at the destination"):
        LocalTransfer(tmp_path / "dc", copier=corrupting).transfer(batch, "s")
    assert not target.exists()
    # A stale wrong file at the destination is replaced by a verified copy, never accepted.
    target.write_bytes(b"not the block")
    report = LocalTransfer(tmp_path / "dc").transfer(batch, "s")
    assert report.bytes_transferred == batch.files[0].size
    assert target.read_bytes() == batch.files[0].path.read_bytes()


def test_interrupted_local_copy_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    def interrupted(source: BinaryIO, sink: BinaryIO) -> None:
        sink.write(source.read(100))
        raise OSError("No space left on device")

    batch = _batch(tmp_path, 1)
    with pytest.raises(TransientTransferError, match="interrupted"):
        LocalTransfer(tmp_path / "dc", copier=interrupted).transfer(batch, "s")
    assert [p.name for p in (tmp_path / "dc").rglob("*") if p.is_file()] == []


def test_prune_deletes_only_confirmed_unchanged_files(tmp_path: Path) -> None:
    batch = _batch(tmp_path, 2)
    report = LocalTransfer(tmp_path / "dc").transfer(batch, "s")
    dry = prune_outbox(batch, report, dry_run=True)
    assert [a.deleted for a in dry] == [False, False] and all(p.path.exists() for p in batch.files)
    batch.files[1].path.write_bytes(b"rewritten since shipping")
    done = prune_outbox(batch, report, dry_run=False)
    assert [a.deleted for a in done] == [True, False]
    assert done[1].reason == "local file changed since shipping"
    report.status = "FAILED"
    assert not any(a.deleted for a in prune_outbox(batch, report, dry_run=False))


# -- GlobusTransfer ------------------------------------------------------------------------------


def _task(status: str, **extra: object) -> dict[str, object]:
    return {
        "DATA_TYPE": "task",
        "task_id": TASK,
        "status": status,
        "nice_status": extra.pop("nice_status", None),
        "bytes_transferred": 2001,
        "bytes_checksummed": 2001,
        "effective_bytes_per_second": 1234,
        "faults": 0,
        **extra,
    }


def _register_task(*states: dict[str, object], http_status: int = 200) -> None:
    for state in states:
        RegisteredResponse(service="transfer", path=f"/v0.10/task/{TASK}", json=state, status=http_status).add()


def _register_events(*events: dict[str, object]) -> None:
    RegisteredResponse(
        service="transfer",
        path=f"/v0.10/task/{TASK}/event_list",
        json={"DATA_TYPE": "event_list", "offset": 0, "limit": 20, "total": len(events), "DATA": list(events)},
    ).add()


def _register_submit(code: str = "Accepted") -> None:
    RegisteredResponse(
        service="transfer",
        method="POST",
        path="/v0.10/transfer",
        json={"DATA_TYPE": "transfer_result", "code": code, "task_id": TASK, "submission_id": "sub-1"},
    ).add()


@pytest.fixture
def globus() -> GlobusTransfer:
    client = globus_sdk.TransferClient(
        authorizer=globus_sdk.NullAuthorizer(), retry_config=RetryConfig(max_retries=3, backoff=lambda ctx: 0.0)
    )
    return GlobusTransfer(client, SETTINGS, sleep=lambda s: None)


@responses.activate
def test_globus_request_carries_checksums_label_and_stable_submission_id(
    globus: GlobusTransfer, tmp_path: Path
) -> None:
    batch = _batch(tmp_path)
    meta = load_response(globus_sdk.TransferClient.get_submission_id).metadata
    submission_id = globus.new_submission_id()
    assert submission_id == meta["submission_id"]
    _register_submit()
    _register_task(_task("ACTIVE"), _task("SUCCEEDED"))
    _register_events()
    report = globus.transfer(batch, submission_id)
    submitted = [c.request for c in responses.calls if c.request.url.endswith("/v0.10/transfer")]
    body = json.loads(submitted[0].body)
    assert body["submission_id"] == submission_id
    assert body["sync_level"] == 3 and body["verify_checksum"] is True  # 3 is "checksum" on the wire
    assert body["label"] == "emzip vol vol-batch-0001" and len(body["label"]) <= 128
    assert "deadline" in body and body["fail_on_quota_errors"] is True
    items = body["DATA"]
    assert [i["external_checksum"] for i in items] == [f.sha256 for f in batch.files]
    assert {i["checksum_algorithm"] for i in items} == {"SHA256"}
    assert items[0]["source_path"] == "/edge/outbox/vol/z0000.emz"
    assert items[0]["destination_path"] == "/dc/inbox/vol/z0000.emz"
    assert report.status == "SUCCEEDED" and report.task_id == TASK and report.bytes_checksummed == 2001
    assert [r.destination for r in report.files] == ["/dc/inbox/vol/z0000.emz", "/dc/inbox/vol/z0001.emz"]


@responses.activate
def test_globus_resubmission_with_same_id_waits_on_the_existing_task(globus: GlobusTransfer, tmp_path: Path) -> None:
    _register_submit(code="Duplicate")
    _register_task(_task("SUCCEEDED"))
    assert globus.transfer(_batch(tmp_path), "sub-1").status == "SUCCEEDED"
    assert sum(c.request.url.endswith("/v0.10/transfer") for c in responses.calls) == 1


@responses.activate
def test_globus_failed_task_raises_instead_of_passing(globus: GlobusTransfer, tmp_path: Path) -> None:
    _register_submit()
    _register_task(_task("FAILED", fatal_error={"code": "PERMISSION_DENIED", "description": "no write access"}))
    with pytest.raises(PermanentTransferError, match="FAILED: PERMISSION_DENIED no write access"):
        globus.transfer(_batch(tmp_path), "sub-1")


@responses.activate
def test_globus_inactive_task_is_reported_as_such(globus: GlobusTransfer, tmp_path: Path) -> None:
    _register_submit()
    _register_task(_task("INACTIVE", nice_status="AUTH"))
    with pytest.raises(TransferInactiveError, match="INACTIVE"):
        globus.transfer(_batch(tmp_path), "sub-1")


@responses.activate
def test_globus_permission_denied_event_cancels_fast(globus: GlobusTransfer, tmp_path: Path) -> None:
    _register_submit()
    _register_task(_task("ACTIVE"))
    _register_events({"code": "PERMISSION_DENIED", "is_error": True, "description": "denied on /dc/inbox", "time": "t"})
    cancel = load_response(globus_sdk.TransferClient.cancel_task, case="default")
    RegisteredResponse(service="transfer", method="POST", path=f"/v0.10/task/{TASK}/cancel", json=cancel.json).add()
    with pytest.raises(PermanentTransferError, match="cancelled: PERMISSION_DENIED denied on /dc/inbox"):
        globus.transfer(_batch(tmp_path), "sub-1")
    assert get_last_request().url.endswith(f"/task/{TASK}/cancel")
    assert sum(f"/task/{TASK}" in c.request.url and c.request.method == "GET" for c in responses.calls) == 2


@responses.activate
def test_globus_503_is_retried_then_succeeds(globus: GlobusTransfer, tmp_path: Path) -> None:
    _register_submit()
    _register_task({"code": "ServiceUnavailable", "message": "down"}, http_status=503)
    _register_task(_task("SUCCEEDED"))
    assert globus.transfer(_batch(tmp_path), "sub-1").status == "SUCCEEDED"


@responses.activate
def test_globus_persistent_503_becomes_transient_error(globus: GlobusTransfer, tmp_path: Path) -> None:
    _register_submit()
    _register_task({"code": "ServiceUnavailable", "message": "down"}, http_status=503)
    with pytest.raises(TransientTransferError, match="HTTP 503"):
        globus.transfer(_batch(tmp_path), "sub-1")


@responses.activate
def test_globus_consent_required_says_what_to_do(globus: GlobusTransfer, tmp_path: Path) -> None:
    RegisteredResponse(
        service="transfer",
        method="POST",
        path="/v0.10/transfer",
        status=403,
        json={
            "code": "ConsentRequired",
            "message": "Missing required data_access consent",
            "required_scopes": [
                "urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/x/data_access]"
            ],
        },
    ).add()
    with pytest.raises(ConsentRequiredError, match="EMZIP_GLOBUS_MAPPED_COLLECTIONS"):
        globus.transfer(_batch(tmp_path), "sub-1")


@responses.activate
def test_confidential_client_auth_and_secret_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    load_response("auth.oauth2_client_credentials_tokens")
    client = transfer_client_from_credentials(
        str(uuid.UUID(int=99)), SECRET, retry_config=RetryConfig(max_retries=1, backoff=lambda ctx: 0.0)
    )
    _register_submit()
    _register_task(_task("SUCCEEDED"))
    report = GlobusTransfer(client, SETTINGS, sleep=lambda s: None).transfer(_batch(tmp_path), "sub-1")
    assert report.status == "SUCCEEDED"
    token_calls = [c for c in responses.calls if c.request.url.endswith("/v2/oauth2/token")]
    assert token_calls, "the client-credentials grant was used"
    submit = next(c for c in responses.calls if c.request.url.endswith("/v0.10/transfer"))
    assert submit.request.headers["Authorization"] == "Bearer DUMMY_TRANSFER_TOKEN_FROM_THE_INTERTUBES"
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(report.as_json())
    mapped = transfer_client_from_credentials(
        str(uuid.UUID(int=99)), SECRET, mapped_collections=[str(uuid.UUID(int=2))]
    )
    requirements = str(mapped._app.scope_requirements)  # the scopes the app will ask Globus Auth for
    assert f"{uuid.UUID(int=2)}/data_access" in requirements
