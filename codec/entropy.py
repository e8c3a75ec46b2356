"""The only module that talks to constriction: ANS coding of voxels under frozen parameters.

Per voxel the model gives an integer mean on a 1/16 grid and a scale index. Format v2 turns
them into probabilities through the exact integer tables of :mod:`codec.tables` (no exp, no
erf anywhere: bit-identical on every machine) and codes with constriction's categorical model,
which normalizes with plain IEEE arithmetic. Format v1 handed mean and scale to constriction's
quantized Laplace/Gaussian models, whose CDFs call the platform's libm; it is kept so that v1
containers still decode, and is never written.
"""

from __future__ import annotations

import constriction
import numpy as np

from codec import tables
from codec.distributions import MEAN_FRACTION_BITS, SYMBOL_MAX, SYMBOL_MIN, scale_table
from codec.errors import CorruptDataError

#: How each container version turns (mean, scale index) into probabilities.
CODER_BY_VERSION = {1: "libm", 2: "tables"}
#: Voxels whose probability rows are built at once when encoding (bounds memory: 2 KiB each).
_ENCODE_CHUNK = 16_384
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
_LIBM_MODELS = {
    "gaussian": constriction.stream.model.QuantizedGaussian(SYMBOL_MIN, SYMBOL_MAX),
    "laplace": constriction.stream.model.QuantizedLaplace(SYMBOL_MIN, SYMBOL_MAX),
}


def _libm_parameters(mean16: np.ndarray, scale_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    means = np.ascontiguousarray(mean16, dtype=np.float64) / float(1 << MEAN_FRACTION_BITS)
    scales = scale_table()[np.asarray(scale_index, dtype=np.int64)]
    return means, np.ascontiguousarray(scales)


def encode_symbols(family: str, symbols: np.ndarray, mean16: np.ndarray, scale_index: np.ndarray) -> np.ndarray:
    """Code ``symbols`` (in decoding order) into one ANS stream of little 32-bit words (v2)."""
    coder = constriction.stream.stack.AnsCoder()
    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    # ANS is a stack: push the last chunk first so that decoding pops them in order.
    starts = list(range(0, symbols.size, _ENCODE_CHUNK))
    for start in reversed(starts):
        stop = start + _ENCODE_CHUNK
        probs = tables.probabilities(family, mean16[start:stop], scale_index[start:stop])
        coder.encode_reverse(symbols[start:stop], _CATEGORICAL, probs)
    return np.asarray(coder.get_compressed(), dtype=np.uint32)


class StreamDecoder:
    """Decodes one ANS stream in consecutive chunks, each under its own parameters."""

    def __init__(self, family: str, words: np.ndarray, coder: str = "tables") -> None:
        if coder not in CODER_BY_VERSION.values():
            raise ValueError(f"unknown coder {coder!r}")
        self._family = family
        self._coder_kind = coder
        try:
            self._coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        except Exception as exc:  # constriction rejects streams that cannot be ANS states
            raise CorruptDataError(f"entropy-coded stream is invalid: {exc}") from exc

    def decode(self, mean16: np.ndarray, scale_index: np.ndarray) -> np.ndarray:
        """The next ``len(mean16)`` symbols as int32."""
        if self._coder_kind == "tables":
            probs = tables.probabilities(self._family, mean16, scale_index)
            return np.asarray(self._coder.decode(_CATEGORICAL, probs), dtype=np.int32)
        means, scales = _libm_parameters(mean16, scale_index)
        return np.asarray(self._coder.decode(_LIBM_MODELS[self._family], means, scales), dtype=np.int32)

    def is_exhausted(self) -> bool:
        """True when every coded word has been consumed (a well-formed stream ends so)."""
        return bool(self._coder.is_empty())
