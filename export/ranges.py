"""Calibrated activation ranges on a fixed grid, so that an int8 artefact does not depend on the last bits of the
build machine's float kernels: two machines (AVX2 or AVX-512, another thread count) compute a tensor's calibrated
range a few ulps apart, which changes every scale, bias and zero point derived from it, and with them the file and,
for images near a class boundary, the verdict. Widening each bound outwards to the next point of a geometric grid
(GRID_STEPS_PER_OCTAVE points per doubling) maps such nearby values to the same one; it widens a range by at most
2^(1/8) - 1 = 9 %, about 0.7 dB of that tensor's quantisation SQNR."""

from __future__ import annotations

import math

GRID_STEPS_PER_OCTAVE = 8


def _grid_above(value: float) -> float:
    """The smallest grid point >= value, for value > 0."""
    return 2.0 ** (math.ceil(math.log2(value) * GRID_STEPS_PER_OCTAVE) / GRID_STEPS_PER_OCTAVE)


def widen_to_grid(low: float, high: float) -> tuple[float, float]:
    """low rounded down and high rounded up to the grid +-2^(k/8); zero stays zero, so the range still holds 0."""
    low, high = float(low), float(high)
    new_low = -_grid_above(-low) if low < 0 else (low if low == 0 else 1 / _grid_above(1 / low))
    new_high = _grid_above(high) if high > 0 else (high if high == 0 else -1 / _grid_above(-1 / high))
    return new_low, new_high
