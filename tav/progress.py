"""One progress/cancel callback shared by tuning, inversion and sampling.

The core only ever calls ``callback(step, total)`` after each unit of work. Front ends decide what
that means: the CLI draws a tqdm bar, the ComfyUI nodes update ``ProgressBar`` and raise ComfyUI's
interrupt exception to cancel. Raising from the callback is the one way to stop a long loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

ProgressFn = Callable[[int, int], None]


def report(callback: Optional[ProgressFn], step: int, total: int) -> None:
    """Call ``callback`` if there is one; exceptions it raises propagate (that is how cancel works)."""
    if callback is not None:
        callback(step, total)
