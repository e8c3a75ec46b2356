"""``GlobusTransfer``: one checksummed Globus transfer task per batch, judged by its real status.

Success means the task's ``status`` is ``SUCCEEDED``; globus-sdk's ``task_wait`` returns True for
any task that is no longer ACTIVE (FAILED included), so it is not used. While the task runs its
events are read: a permanent fault (permission denied, file not found, quota) cancels the task
and raises at once; INACTIVE (expired credentials) raises ``TransferInactiveError``. Transient HTTP
errors (429, 5xx) are retried inside globus-sdk by its ``RetryConfig``; a batch that is still
active at the timeout raises ``TransientTransferError`` and a later retry resubmits under the same
``submission_id``, which Globus answers with the existing task ("Duplicate"), never a second copy.
"""

from __future__ import annotations

import datetime
import logging
import posixpath
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import globus_sdk
from globus_sdk.transport import RetryConfig

from tasks.transfer._errors import (
    ConsentRequiredError,
    PermanentTransferError,
    TransferInactiveError,
    TransientTransferError,
)
from tasks.transfer._model import FileResult, TransferBatch, TransferReport

log = logging.getLogger("emzip.transfer")
PERMANENT_FAULTS = frozenset(
    {"PERMISSION_DENIED", "FILE_NOT_FOUND", "QUOTA_EXCEEDED", "NO_SPACE_LEFT", "CONSENT_REQUIRED", "FILE_TOO_LARGE"}
)
LABEL_LIMIT = 128


@dataclass(frozen=True)
class GlobusSettings:
    """Where a batch goes: collections, roots on each, and how long to wait.

    ``source_root`` is the outbox folder as the source collection sees it; ``mapped_collections``
    are the collection ids that need a data-access scope (GCS v5 mapped collections).
    """

    source_collection: str
    destination_collection: str
    source_root: str
    destination_root: str
    mapped_collections: tuple[str, ...] = ()
    poll_seconds: float = 15.0
    timeout_seconds: float = 6 * 3600.0
    deadline_hours: float = 24.0


def transfer_client_from_credentials(
    client_id: str,
    client_secret: str,
    *,
    mapped_collections: Iterable[str] = (),
    token_storage: str = "memory",
    retry_config: RetryConfig | None = None,
) -> globus_sdk.TransferClient:
    """A TransferClient authenticated as a confidential client (``ClientApp``).

    ``token_storage`` is a globus-sdk storage name ("memory", "json", "sqlite") or a path
    handled by the SDK; data-access scopes are added for mapped collections. The secret is
    passed to globus-sdk only; it is never logged or stored by emzip.
    """
    app = globus_sdk.ClientApp(
        "emzip",
        client_id=client_id,
        client_secret=client_secret,
        config=globus_sdk.GlobusAppConfig(token_storage=token_storage),  # type: ignore[arg-type]
    )
    client = globus_sdk.TransferClient(app=app, retry_config=retry_config or RetryConfig(max_retries=5))
    collections = list(mapped_collections)
    if collections:
        client.add_app_data_access_scope(collections)
    return client


class GlobusTransfer:
    """The Globus backend over a ready ``TransferClient`` (see ``transfer_client_from_credentials``)."""

    name = "globus"

    def __init__(
        self,
        client: globus_sdk.TransferClient,
        settings: GlobusSettings,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.settings = settings
        self.destination = f"globus://{settings.destination_collection}{settings.destination_root}"
        self._sleep = sleep

    def new_submission_id(self) -> str:
        """Ask Globus for a submission id (persist it with the batch before submitting)."""
        return str(self._call(self.client.get_submission_id)["value"])

    def transfer(self, batch: TransferBatch, submission_id: str) -> TransferReport:
        """Submit the batch (idempotently) and wait for SUCCEEDED, or raise with the reason."""
        started = time.monotonic()
        task_id = self._submit(batch, submission_id)
        log.info("batch %s: Globus task %s submitted (%d files)", batch.batch_id, task_id, len(batch.files))
        report = TransferReport(
            backend=self.name, batch_id=batch.batch_id, submission_id=submission_id, status="ACTIVE"
        )
        report.task_id = task_id
        task = self._wait(task_id, batch, report)
        report.status = str(task["status"])
        report.bytes_transferred = int(task.get("bytes_transferred") or 0)
        report.bytes_checksummed = int(task.get("bytes_checksummed") or 0)
        report.effective_bytes_per_second = float(task.get("effective_bytes_per_second") or 0)
        report.faults = int(task.get("faults") or 0)
        report.seconds = time.monotonic() - started
        report.files = [
            FileResult(f.relative_path, self._destination_path(f.relative_path), f.sha256, True, f.block_id)
            for f in batch.files
        ]
        return report

    def transfer_data(self, batch: TransferBatch, submission_id: str) -> globus_sdk.TransferData:
        """The request body: checksum sync, verification, per-file SHA256, label, deadline."""
        deadline = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=self.settings.deadline_hours)
        data = globus_sdk.TransferData(
            self.settings.source_collection,
            self.settings.destination_collection,
            label=f"emzip {batch.volume} {batch.batch_id}"[:LABEL_LIMIT],
            submission_id=submission_id,
            sync_level="checksum",
            verify_checksum=True,
            deadline=deadline.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            fail_on_quota_errors=True,
        )
        for item in batch.files:
            data.add_item(
                posixpath.join(self.settings.source_root, item.relative_path),
                self._destination_path(item.relative_path),
                external_checksum=item.sha256,
                checksum_algorithm="SHA256",
            )
        return data

    def _destination_path(self, relative_path: str) -> str:
        return posixpath.join(self.settings.destination_root, relative_path)

    def _submit(self, batch: TransferBatch, submission_id: str) -> str:
        response = self._call(self.client.submit_transfer, self.transfer_data(batch, submission_id))
        if response.get("code") == "Duplicate":
            log.info("batch %s: already submitted as task %s, waiting on it", batch.batch_id, response["task_id"])
        return str(response["task_id"])

    def _wait(self, task_id: str, batch: TransferBatch, report: TransferReport) -> dict[str, Any]:
        waited_until = time.monotonic() + self.settings.timeout_seconds
        while True:
            task = self._call(self.client.get_task, task_id).data
            status = task.get("status")
            if status == "SUCCEEDED":
                return dict(task)
            if status == "FAILED":
                fatal = task.get("fatal_error") or {}
                code = fatal.get("code") or task.get("nice_status") or "unknown"
                detail = fatal.get("description") or ""
                message = f"batch {batch.batch_id}: Globus task {task_id} FAILED: {code} {detail}"
                raise PermanentTransferError(message.strip())
            if status == "INACTIVE":
                raise TransferInactiveError(
                    f"batch {batch.batch_id}: Globus task {task_id} is INACTIVE "
                    f"({task.get('nice_status') or 'credentials expired'}); "
                    "re-authenticate the client and the task resumes"
                )
            self._check_events(task_id, task, batch, report)
            if time.monotonic() >= waited_until:
                raise TransientTransferError(
                    f"batch {batch.batch_id}: Globus task {task_id} still {status} after "
                    f"{self.settings.timeout_seconds:.0f} s; retry waits on the same task"
                )
            self._sleep(self.settings.poll_seconds)

    def _check_events(self, task_id: str, task: dict[str, Any], batch: TransferBatch, report: TransferReport) -> None:
        nice_status = task.get("nice_status")
        fault: str | None = nice_status if nice_status in PERMANENT_FAULTS else None
        description = ""
        for event in self._call(self.client.task_event_list, task_id, limit=20):
            record = {k: event.get(k) for k in ("code", "is_error", "description", "time")}
            if record not in report.events:
                report.events.append(record)
            if event.get("is_error") and event.get("code") in PERMANENT_FAULTS and fault is None:
                fault, description = str(event["code"]), str(event.get("description") or "")
        if fault is None:
            return
        log.warning("batch %s: permanent fault %s, cancelling Globus task %s", batch.batch_id, fault, task_id)
        try:
            self.client.cancel_task(task_id)
        except globus_sdk.GlobusAPIError as exc:
            log.warning("batch %s: cancelling task %s failed: %s", batch.batch_id, task_id, exc.code)
        raise PermanentTransferError(
            f"batch {batch.batch_id}: Globus task {task_id} cancelled: {fault} {description}".strip()
        )

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except globus_sdk.GlobusAPIError as exc:
            raise _classify(exc) from exc
        except globus_sdk.NetworkError as exc:
            raise TransientTransferError(f"Globus unreachable: {type(exc).__name__}") from exc


def _classify(exc: globus_sdk.GlobusAPIError) -> Exception:
    code = str(exc.code)
    if "ConsentRequired" in code or exc.info.consent_required:
        scopes = exc.info.consent_required.required_scopes or []
        return ConsentRequiredError(
            f"Globus says consent is required ({code}) for scopes {scopes}. For a mapped collection, list its id "
            "in EMZIP_GLOBUS_MAPPED_COLLECTIONS so emzip requests the data_access scope, and make sure the "
            "client identity has access to the collection; then run the batch again."
        )
    if exc.http_status in (429, 500, 502, 503, 504):
        return TransientTransferError(f"Globus API busy or failing (HTTP {exc.http_status} {code}) after retries")
    if exc.http_status in (401,):
        return TransferInactiveError(f"Globus rejected the credentials (HTTP 401 {code}); check client id and secret")
    return PermanentTransferError(f"Globus API error HTTP {exc.http_status} {code}: {exc.message}")
