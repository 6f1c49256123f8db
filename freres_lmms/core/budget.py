"""Budget semantics shared by every method.

``budget`` is either a number of visual tokens (an ``int``) or a retention ratio (a ``float`` in
``(0, 1]``), the convention model_args parsing gives for free: ``budget=2048`` is a count and
``budget=0.25`` a ratio (``budget=1.0`` keeps everything; ``budget=1`` means one token).
``None`` means no compression. A count above the video's size keeps everything.
"""

from __future__ import annotations

import math

from .base import CompressionError


def check_budget(budget) -> None:
    """Refuse a budget that is neither a count nor a ratio, saying which was probably meant.

    model_args parse ``budget=-1`` as the float -1.0 and ``budget=2048`` as the int 2048, so a
    whole float outside (0, 1] is reported as a count that went wrong, not as a bad ratio."""
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise CompressionError(f"budget must be a token count (an integer >= 1, e.g. 2048) or a retention ratio "
                               f"(a float in (0, 1], e.g. 0.25), got {budget!r}")
    if isinstance(budget, int) and budget < 1:
        raise CompressionError(f"budget {budget}: a token count must be at least 1 (a ratio is a float in (0, 1], e.g. 0.25)")
    if isinstance(budget, float) and not 0.0 < budget <= 1.0:
        if budget == int(budget):
            raise CompressionError(f"budget {int(budget)}: a token count must be at least 1 (a ratio is a float in (0, 1])")
        raise CompressionError(f"budget {budget}: a retention ratio must lie in (0, 1] (a count is an integer >= 1, e.g. 2048)")


def budget_tokens(budget: int | float | None, total: int) -> int:
    """Number of tokens a budget allows for a video of ``total`` tokens."""
    if budget is None:
        return total
    check_budget(budget)
    if isinstance(budget, float):
        return max(1, math.floor(budget * total))
    return min(budget, total)
