"""Out of device memory mid-run: release everything the run held and say what to change.

Why: a ``torch.OutOfMemoryError`` raised deep inside a UNet step carries a traceback whose frames hold
the run's activations, its tuned copy of the UNet and the optimizer state. While anything keeps that
exception (a host's error report, a chained exception, ``sys.last_value``) the memory stays taken
and every later job fails too. :func:`releases_memory` turns it into :class:`OutOfMemory`, raised
after the original exception (and with it every frame of the run) is gone, and returns the cached
blocks to the device.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import TypeVar

import torch

from .validation import InputError

_F = TypeVar("_F", bound=Callable)

ADVICE = {
    "tune": "lower the frame count or the size, keep gradient checkpointing on and use bf16/fp16 precision",
    "invert": "lower the frame count or the size, or run in windows (window/overlap)",
    "sample": "lower the frame count or the size, or run in windows (window/overlap)",
}


class OutOfMemory(InputError):
    """A job ran out of device memory; what it held is released, the message says what to change."""


def release() -> None:
    """Collect garbage cycles and hand the CUDA allocator's cached blocks back to the device."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def releases_memory(kind: str) -> Callable[[_F], _F]:
    """Decorate a ``kind`` job ("tune", "invert", "sample") so an out-of-memory error leaves nothing behind."""
    advice = ADVICE[kind]

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def run(*args: object, **kwargs: object) -> object:
            try:
                return fn(*args, **kwargs)
            except torch.OutOfMemoryError as e:
                detail = " ".join(str(e).split())[:240]
            # raised here, outside the except block: no __context__ keeps the old traceback alive
            release()
            raise OutOfMemory(
                f"{kind} ran out of device memory ({detail}); everything it held is released: {advice}. "
                "`python -m tav plan` shows what fits"
            )

        return run  # type: ignore[return-value]

    return wrap
