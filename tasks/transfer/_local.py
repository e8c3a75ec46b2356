"""``LocalTransfer``: the embedded default backend, a verified copy into a destination folder."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tasks.store.atomic import fsync_directory, locked_temporary
from tasks.store.checksums import file_sha256
from tasks.store.failpoints import failpoint
from tasks.transfer._errors import PermanentTransferError, TransientTransferError
from tasks.transfer._model import FileResult, OutboxFile, TransferBatch, TransferReport

Copier = Callable[[BinaryIO, BinaryIO], None]


class LocalTransfer:
    """Copy to ``destination`` (a folder): temporary name, fsync, sha256 check, rename.

    A file already at the destination with the right sha256 is not copied again (a retried batch
    never duplicates); one with the wrong content is replaced only by a copy that verified.
    ``copier`` is the transport seam (``shutil.copyfileobj`` by default); tests inject faults there.
    """

    name = "local"

    def __init__(self, destination: str | os.PathLike[str], copier: Copier | None = None) -> None:
        self.root = Path(destination)
        self.destination = str(self.root)
        self._copy = copier or shutil.copyfileobj

    def new_submission_id(self) -> str:
        """A random id; the local copy is idempotent by checksum anyway."""
        return str(uuid.uuid4())

    def transfer(self, batch: TransferBatch, submission_id: str) -> TransferReport:
        """Copy every file of the batch; raise on the first that cannot be verified."""
        started = time.monotonic()
        report = TransferReport(
            backend=self.name, batch_id=batch.batch_id, submission_id=submission_id, status="ACTIVE"
        )
        for item in batch.files:
            copied = self._copy_one(item)
            report.files.append(
                FileResult(item.relative_path, str(self.root / item.relative_path), item.sha256, True, item.block_id)
            )
            report.bytes_transferred += item.size if copied else 0
            report.bytes_checksummed += item.size
        report.seconds = time.monotonic() - started
        report.effective_bytes_per_second = report.bytes_transferred / max(report.seconds, 1e-9)
        report.status = "SUCCEEDED"
        return report

    def _copy_one(self, item: OutboxFile) -> bool:
        if not item.path.is_file():
            raise PermanentTransferError(f"{item.path}: outbox file is missing")
        target = self.root / item.relative_path
        if target.is_file() and file_sha256(target) == item.sha256:
            return False
        try:
            with item.path.open("rb") as source, locked_temporary(target) as (temporary, sink):
                self._copy(source, sink)
                failpoint("copy.partial")
                sink.flush()
                os.fsync(sink.fileno())
                arrived = file_sha256(temporary)
                if arrived != item.sha256:
                    raise PermanentTransferError(
                        f"{item.relative_path}: checksum mismatch at the destination "
                        f"(sha256 {arrived[:12]}, expected {item.sha256[:12]}); the copy was discarded"
                    )
                os.replace(temporary, target)
            fsync_directory(target.parent)
        except OSError as exc:
            raise TransientTransferError(f"{target}: copy from {item.path} interrupted: {exc}") from exc
        return True
