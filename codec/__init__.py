"""emzip's codec: lossless learned compression of EM blocks. numpy in, bytes out.

>>> from codec import compress, decompress
>>> restored = decompress(compress(block))

The codec is a pure library: it never imports prefect, globus_sdk or tensorstore.
"""

from codec.api import ContainerInfo, EncodeResult, compress, decompress, decompress_many, encode, inspect
from codec.container import FORMAT_VERSION
from codec.errors import (
    CorruptDataError,
    EmzipError,
    FormatError,
    TruncatedError,
    UnsupportedInputError,
    UnsupportedVersionError,
)
from codec.settings import Settings

__all__ = [
    "FORMAT_VERSION",
    "ContainerInfo",
    "CorruptDataError",
    "EmzipError",
    "EncodeResult",
    "FormatError",
    "Settings",
    "TruncatedError",
    "UnsupportedInputError",
    "UnsupportedVersionError",
    "compress",
    "decompress",
    "decompress_many",
    "encode",
    "inspect",
]
