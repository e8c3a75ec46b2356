"""Type stub of the compiled v4 engine (codec/_engine.c)."""

from typing import Any

PROB_BITS: int
LUT_BITS: int
MARGIN: int
MEAN_FRACTIONS: int
MAX_HIDDEN: int
MAX_INPUTS: int
MAX_EXTENT: int

def use_kernel(name: str) -> str: ...
def encode_stripe(
    volume: Any, depth: int, rows: int, cols: int, y0: int, y1: int, model: Any, cum: Any, lut: Any
) -> bytes: ...
def decode_block(
    volume: Any,
    depth: int,
    rows: int,
    cols: int,
    model: Any,
    cum: Any,
    lut: Any,
    stripes: list[tuple[int, int, Any]],
    threads: int,
) -> None: ...
