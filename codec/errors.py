"""The exceptions the codec raises. Every one names the problem; callers catch ``EmzipError``.

::

    EmzipError                      anything the codec reports on purpose
    ├── FormatError                 not an emzip container, or one this version cannot read
    │   ├── UnsupportedVersionError   written by a newer format version
    │   └── TruncatedError            the data ends before the container does
    ├── CorruptDataError            a checksum, length or field does not match: data damaged
    └── UnsupportedInputError       compress() was given something it cannot store
"""

from __future__ import annotations


class EmzipError(Exception):
    """Base class of every error the codec raises on purpose."""


class FormatError(EmzipError):
    """The bytes are not an emzip container this version can read."""


class UnsupportedVersionError(FormatError):
    """The container was written by a format version this code does not know."""


class TruncatedError(FormatError):
    """The data ends before the container does (an interrupted copy or write)."""


class CorruptDataError(EmzipError):
    """A checksum, length or field is inconsistent: the container was damaged."""


class UnsupportedInputError(EmzipError):
    """The array given to ``compress`` cannot be stored (wrong rank, empty, too large)."""
