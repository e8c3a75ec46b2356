"""The transfer exception tree (drawn in the package docstring)."""

from __future__ import annotations


class TransferError(Exception):
    """A batch did not arrive verified at its destination."""


class TransientTransferError(TransferError):
    """A failure that may pass: retry the batch later (with the same submission id)."""


class TransferInactiveError(TransientTransferError):
    """Globus made the task INACTIVE, typically because credentials expired or consent lapsed."""


class PermanentTransferError(TransferError):
    """A failure that retrying will not fix; the message carries the reason."""


class ConsentRequiredError(PermanentTransferError):
    """The Globus client lacks a required consent or data-access scope."""
