"""The only module that talks to constriction: ANS coding of voxels under frozen parameters.

The coder receives, per voxel, a mean on a 1/16 grid and a scale from the integer-built scale
table, both exact float64 values; constriction turns them into 24-bit fixed-point
probabilities with its own Rust CDF code, so identical parameters give identical
probabilities on every machine.
"""

from __future__ import annotations

import constriction
import numpy as np

from codec.distributions import MEAN_FRACTION_BITS, SYMBOL_MAX, SYMBOL_MIN, scale_table
from codec.errors import CorruptDataError

_MODELS = {
    "gaussian": constriction.stream.model.QuantizedGaussian(SYMBOL_MIN, SYMBOL_MAX),
    "laplace": constriction.stream.model.QuantizedLaplace(SYMBOL_MIN, SYMBOL_MAX),
}


def _parameters(mean16: np.ndarray, scale_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    means = np.ascontiguousarray(mean16, dtype=np.float64) / float(1 << MEAN_FRACTION_BITS)
    scales = scale_table()[np.asarray(scale_index, dtype=np.int64)]
    return means, np.ascontiguousarray(scales)


def encode_symbols(family: str, symbols: np.ndarray, mean16: np.ndarray, scale_index: np.ndarray) -> np.ndarray:
    """Code ``symbols`` (in decoding order) into one ANS stream of little 32-bit words."""
    coder = constriction.stream.stack.AnsCoder()
    means, scales = _parameters(mean16, scale_index)
    coder.encode_reverse(np.ascontiguousarray(symbols, dtype=np.int32), _MODELS[family], means, scales)
    return np.asarray(coder.get_compressed(), dtype=np.uint32)


class StreamDecoder:
    """Decodes one ANS stream in consecutive chunks, each under its own parameters."""

    def __init__(self, family: str, words: np.ndarray) -> None:
        self._model = _MODELS[family]
        try:
            self._coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        except Exception as exc:  # constriction rejects streams that cannot be ANS states
            raise CorruptDataError(f"entropy-coded stream is invalid: {exc}") from exc

    def decode(self, mean16: np.ndarray, scale_index: np.ndarray) -> np.ndarray:
        """The next ``len(mean16)`` symbols as int32."""
        means, scales = _parameters(mean16, scale_index)
        return np.asarray(self._coder.decode(self._model, means, scales), dtype=np.int32)

    def is_exhausted(self) -> bool:
        """True when every coded word has been consumed (a well-formed stream ends so)."""
        return bool(self._coder.is_empty())
