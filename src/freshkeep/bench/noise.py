"""Whether a difference measured side by side is larger than the run's own spread.

Two figures measured in the same rounds (interleaved, seconds apart, under the same load)
give one ratio per round. On a shared machine those ratios scatter: a difference smaller
than their spread says nothing, and the report says *within noise* instead of a ratio.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

WITHIN_NOISE = "within noise"


def side_by_side(num: Sequence[float] | None, den: Sequence[float] | None) -> list[float]:
    """The ratios ``num[i] / den[i]`` of rounds run side by side (rounds with a zero
    denominator left out; none when either is missing or their lengths differ)."""
    if not num or not den or len(num) != len(den):
        return []
    return [n / d for n, d in zip(num, den, strict=True) if d]


def within_noise(ratios: Sequence[float]) -> bool:
    """Whether the median of ``ratios`` differs from 1 by less than their spread, both as
    factors: ``|log(median)| < log(largest / smallest)`` (so 1.05 in rounds of 0.9 to 1.31
    is noise, 35 in rounds of 20 to 80 is not). Fewer than two ratios, or one that is not
    positive, measure no spread: never within noise."""
    if len(ratios) < 2 or min(ratios) <= 0:
        return False
    return abs(math.log(statistics.median(ratios))) < math.log(max(ratios) / min(ratios))


def ratio_cell(value: float, ratios: Sequence[float], spec: str = ".2f") -> str:
    """``value`` formatted with ``spec``, or :data:`WITHIN_NOISE` when ``ratios`` say so."""
    return WITHIN_NOISE if within_noise(ratios) else format(value, spec)
