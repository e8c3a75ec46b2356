"""What a transfer takes (a batch of verified outbox files) and what it reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class OutboxFile:
    """One verified file in the outbox: where it is, its sha256, and the name it has at the destination."""

    path: Path
    sha256: str
    size: int
    relative_path: str
    """Path below the destination root, e.g. ``run7/z0064_y0000_x0000.emz``."""
    block_id: str | None = None


@dataclass(frozen=True)
class TransferBatch:
    """Files shipped together (one Globus task); ``batch_id`` names it in labels and the ledger."""

    batch_id: str
    volume: str
    files: tuple[OutboxFile, ...]

    @property
    def total_bytes(self) -> int:
        """Sum of the file sizes."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class FileResult:
    """One file's outcome: where it landed and the checksum confirmed there."""

    relative_path: str
    destination: str
    sha256: str
    verified: bool
    block_id: str | None = None


@dataclass
class TransferReport:
    """What the backend reports for a batch; goes into each block's provenance record."""

    backend: str
    batch_id: str
    submission_id: str
    status: str
    task_id: str | None = None
    bytes_transferred: int = 0
    bytes_checksummed: int = 0
    effective_bytes_per_second: float = 0.0
    faults: int = 0
    seconds: float = 0.0
    files: list[FileResult] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


class TransferBackend(Protocol):
    """The interface every backend implements."""

    name: str
    destination: str

    def new_submission_id(self) -> str:
        """An id to persist with a batch before submitting it; resubmitting under it never copies twice."""
        ...

    def transfer(self, batch: TransferBatch, submission_id: str) -> TransferReport:
        """Ship the batch and wait; return per-file results or raise a ``TransferError``."""
        ...
