"""Shipping verified outbox files to the data center: one interface, two backends.

Backends (all with the same ``TransferBackend`` interface):

- ``LocalTransfer``: the embedded default; copies into a destination folder through a temporary
  name, fsyncs, verifies the sha256 at the destination, then renames.
- ``GlobusTransfer``: one Globus transfer task per batch, checksummed end to end.

Exception tree (never a bare bool)::

    TransferError                 anything that kept a batch from arriving verified
    ├── TransientTransferError    worth retrying later (network, 5xx, timeout, interrupted copy)
    │   └── TransferInactiveError Globus paused the task: credentials expired, re-authenticate
    └── PermanentTransferError    retrying will not help (permission denied, file not found,
        │                         quota, a checksum mismatch at the destination, task FAILED)
        └── ConsentRequiredError  the client needs a consent or data-access scope; says what to do
"""

from tasks.transfer._errors import (
    ConsentRequiredError,
    PermanentTransferError,
    TransferError,
    TransferInactiveError,
    TransientTransferError,
)
from tasks.transfer._globus import GlobusSettings, GlobusTransfer, transfer_client_from_credentials
from tasks.transfer._local import LocalTransfer
from tasks.transfer._model import FileResult, OutboxFile, TransferBackend, TransferBatch, TransferReport
from tasks.transfer._prune import PruneAction, prune_outbox

__all__ = [
    "ConsentRequiredError",
    "FileResult",
    "GlobusSettings",
    "GlobusTransfer",
    "LocalTransfer",
    "OutboxFile",
    "PermanentTransferError",
    "PruneAction",
    "TransferBackend",
    "TransferBatch",
    "TransferError",
    "TransferInactiveError",
    "TransferReport",
    "TransientTransferError",
    "prune_outbox",
    "transfer_client_from_credentials",
]
