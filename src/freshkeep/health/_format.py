"""How ages read in check details."""

from __future__ import annotations

import math


def age_text(seconds: float) -> str:
    """``seconds`` as ``45s``, ``3m 20s``, ``2h 0m`` or ``1d 2h`` (negative reads as ``0s``)."""
    if not math.isfinite(seconds):
        return "forever"
    s = max(0, int(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if 0 < seconds < 10 and seconds != int(seconds) else f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m}m"
    d, h = divmod(h, 24)
    return f"{d}d {h}h"
