"""Budget semantics shared by every method.

``budget`` is either a number of visual tokens (an ``int``) or a retention ratio (a ``float`` in
``(0, 1]``), the convention model_args parsing gives for free: ``budget=2048`` is a count and
``budget=0.25`` a ratio (``budget=1.0`` keeps everything; ``budget=1`` means one token).
``None`` means no compression. A count above the video's size keeps everything.
"""

from __future__ import annotations

import math

from .base import CompressionError


def budget_tokens(budget: int | float | None, total: int) -> int:
    """Number of tokens a budget allows for a video of ``total`` tokens."""
    if budget is None:
        return total
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise CompressionError(f"budget must be a token count (int) or a ratio (float), got {budget!r}")
    if isinstance(budget, float):
        if not 0.0 < budget <= 1.0:
            raise CompressionError(f"a ratio budget must lie in (0, 1], got {budget}")
        return max(1, math.floor(budget * total))
    if budget < 1:
        raise CompressionError(f"a token budget must be at least 1, got {budget}")
    return min(budget, total)
