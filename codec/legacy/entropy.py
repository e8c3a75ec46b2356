"""The only module that talks to constriction: ANS coding of voxels under frozen parameters.

Format v3 codes a lattice group (:mod:`codec.legacy.lattice`) at a time. Each voxel's scale index
picks a window width (:data:`codec.tables.WINDOW_WIDTHS`); the group's voxels are coded width
class by width class (narrowest first, each class in stream order), every voxel as its offset
inside a window of exact integer masses around floor(mean) or as the escape entry, and then
the escaped voxels, in stream order, under the masses outside their windows. A decoder knows
every voxel's mean and scale before the group's first symbol, so each step is one call.

Per voxel the model gives an integer mean on a 1/16 grid and a scale index. Format v2 turns
them into probabilities through the exact integer tables of :mod:`codec.tables` (no exp, no
erf anywhere: bit-identical on every machine) and codes with constriction's categorical model,
which normalizes with plain IEEE arithmetic (its encoder is retired; v2 streams still decode,
and its full rows code v3's escapes). Format v1 handed mean and scale to constriction's
quantized Laplace/Gaussian models, whose CDFs call the platform's libm; it is kept so that v1
containers still decode, and is never written.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from codec import tables
from codec.distributions import MEAN_FRACTION_BITS, N_SCALES, SYMBOL_MAX, SYMBOL_MIN, scale_table
from codec.errors import CorruptDataError

#: How each container version turns (mean, scale index) into probabilities.
CODER_BY_VERSION = {1: "libm", 2: "tables", 3: "windows"}
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
_LIBM_MODELS = {
    "gaussian": constriction.stream.model.QuantizedGaussian(SYMBOL_MIN, SYMBOL_MAX),
    "laplace": constriction.stream.model.QuantizedLaplace(SYMBOL_MIN, SYMBOL_MAX),
}


def _libm_parameters(mean16: np.ndarray, scale_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    means = np.ascontiguousarray(mean16, dtype=np.float64) / float(1 << MEAN_FRACTION_BITS)
    scales = scale_table()[np.asarray(scale_index, dtype=np.int64)]
    return means, np.ascontiguousarray(scales)


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

    @property
    def family(self) -> str:
        return self._family

    def decode_rows(self, probabilities: np.ndarray) -> np.ndarray:
        """The next ``len(probabilities)`` symbols, each under its own row of probabilities."""
        return np.asarray(self._coder.decode(_CATEGORICAL, np.ascontiguousarray(probabilities)), dtype=np.int64)

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


# -- format v3: windows per width class, escapes -------------------------------------------------
#: Voxels decoded per constriction call: a call materializes one probability row per voxel
#: (up to 257 float32 for a window, 256 float64 for an escape), so a whole group of a large
#: slice at once took about 850 bytes per voxel (3.5 GB for a 2048 x 2048 slice). Splitting a
#: call keeps the symbol order, so the stream is the same.
DECODE_CHUNK = 1 << 16


@dataclass(frozen=True)
class _Call:
    """One width class of a group: its voxels (stream order) and their rows of one window table."""

    members: np.ndarray  # positions inside the group, stream order
    table: np.ndarray
    rows: np.ndarray  # row of ``table`` per member

    @property
    def probabilities(self) -> np.ndarray:
        """Every member's row at once (the encoder's view)."""
        return np.take(self.table, self.rows, axis=0)


def _group_plan(family: str, mean16: np.ndarray, scale_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[_Call]]:
    """(window start symbol, width, calls per width class) of a group's voxels."""
    mean16 = np.asarray(mean16, dtype=np.int64)
    scale_index = np.asarray(scale_index, dtype=np.int64)
    if mean16.size and (
        mean16.min() < 0
        or mean16.max() > (SYMBOL_MAX << MEAN_FRACTION_BITS)
        or scale_index.min() < 0
        or scale_index.max() >= N_SCALES
    ):
        raise CorruptDataError("model produced parameters outside the coding grids")
    classes = tables.window_classes(family)[scale_index]
    widths = np.asarray(tables.WINDOW_WIDTHS, np.int64)[classes]
    start = (mean16 >> MEAN_FRACTION_BITS) - widths // 2
    row = scale_index * tables.N_FRACTIONS + (mean16 & (tables.N_FRACTIONS - 1))
    calls = []
    for c, width in enumerate(tables.WINDOW_WIDTHS):
        members = np.flatnonzero(classes == c)
        if members.size:
            calls.append(_Call(members, tables.window_table(family, width), row[members]))
    return start, widths, calls


def _escape_rows(
    family: str, mean16: np.ndarray, scale_index: np.ndarray, start: np.ndarray, widths: np.ndarray
) -> np.ndarray:
    """Full 256-symbol rows with each voxel's window zeroed: an escaped symbol lies outside it."""
    probs = np.maximum(tables.probabilities(family, mean16, scale_index), 1.0)  # no all-zero row
    symbols = np.arange(SYMBOL_MAX + 1, dtype=np.int64)
    inside = (symbols >= start[:, None]) & (symbols < (start + widths)[:, None])
    probs[inside] = 0.0
    return probs


def encode_groups(family: str, groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Code a slice's groups, each (symbols, mean16, scale index) in stream order, into one
    ANS stream of 32-bit words (v3). Decoding pops them in the same order."""
    plan: list[tuple[np.ndarray, np.ndarray]] = []  # (symbols, probabilities) in decoding order
    for symbols, mean16, scale_index in groups:
        symbols = np.asarray(symbols, dtype=np.int64)
        start, widths, calls = _group_plan(family, mean16, scale_index)
        offset = symbols - start
        escaped = (offset < 0) | (offset >= widths)
        index = np.where(escaped, widths, offset)
        for call in calls:
            plan.append((index[call.members].astype(np.int32), call.probabilities))
        esc = np.flatnonzero(escaped)
        if esc.size:
            rows = _escape_rows(family, np.asarray(mean16)[esc], np.asarray(scale_index)[esc], start[esc], widths[esc])
            plan.append((symbols[esc].astype(np.int32), rows))
    coder = constriction.stream.stack.AnsCoder()
    for symbols_, probs in reversed(plan):  # ANS is a stack: push the last call first
        coder.encode_reverse(np.ascontiguousarray(symbols_), _CATEGORICAL, np.ascontiguousarray(probs))
    return np.asarray(coder.get_compressed(), dtype=np.uint32)


def decode_group(coder: StreamDecoder, mean16: np.ndarray, scale_index: np.ndarray) -> np.ndarray:
    """The next group's symbols (int64, stream order) from a v3 stream."""
    family = coder.family
    start, widths, calls = _group_plan(family, mean16, scale_index)
    index = np.empty(start.size, np.int64)
    for call in calls:
        for first in range(0, call.members.size, DECODE_CHUNK):
            part = slice(first, first + DECODE_CHUNK)
            index[call.members[part]] = coder.decode_rows(np.take(call.table, call.rows[part], axis=0))
    symbols = start + index
    escaped = np.flatnonzero(index == widths)
    if np.any(index > widths):
        raise CorruptDataError("entropy-coded stream decodes outside its windows")
    mean16, scale_index = np.asarray(mean16), np.asarray(scale_index)
    for first in range(0, escaped.size, DECODE_CHUNK):
        piece = escaped[first : first + DECODE_CHUNK]
        rows = _escape_rows(family, mean16[piece], scale_index[piece], start[piece], widths[piece])
        symbols[piece] = coder.decode_rows(rows)
    if symbols.size and (symbols.min() < SYMBOL_MIN or symbols.max() > SYMBOL_MAX):
        raise CorruptDataError("entropy-coded stream decodes to values outside 0..255")
    return symbols
