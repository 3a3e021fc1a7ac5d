"""Every difference between the ComfyUI versions the pack supports (0.3.64 to 0.33.0), in one place.

Each shim is named for the upstream change it answers and finds it by feature detection (an attribute,
a behaviour), never by a version number; the rest of the pack calls these and never asks which ComfyUI
it runs on. docs/compatibility.md lists them. Nothing here imports ComfyUI: callers pass its objects in.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

#: ControlNet attributes (newer than 0.33.0) that cache hints prepared from ``cond_hint_original``, per size
HINT_CACHES = ("cond_hints", "control_inputs")


def disable_causal_window_fix(handler: Any) -> None:
    """ComfyUI #13563 (2026-05, on by default) prepends the frame before each window to every window after the
    first (windows run L+1 frames). Tune-A-Video's windows are exactly their index lists (the pipeline
    path's, and the anchor is frame 0): turn it off. The constructor keyword does not exist on 0.3.x."""
    if hasattr(handler, "causal_window_fix"):
        handler.causal_window_fix = False


@functools.cache
def set_step_takes_frame_batch(handler_cls: type) -> bool:
    """Whether ``handler_cls.set_step`` accepts a per-frame timestep batch.

    Before ComfyUI #10975 (2025-12; so on 0.3.64-0.3.75) it compared the whole batch with ``sample_sigmas``
    and raised a size mismatch when frames are the batch; since, it reads ``timestep[0]``. Probed on a bare
    instance (the check needs no model).
    """
    probe = handler_cls.__new__(handler_cls)
    options = {"transformer_options": {"sample_sigmas": torch.tensor([2.0, 1.0, 0.0])}}
    try:
        handler_cls.set_step(probe, torch.ones(2), options)
    except RuntimeError:
        return False
    return True


def set_step_timestep(handler_cls: type, timestep: torch.Tensor) -> torch.Tensor:
    """The timestep to hand ``handler_cls.set_step``: one timestep where it cannot take the frame batch."""
    return timestep if set_step_takes_frame_batch(handler_cls) else timestep.flatten()[:1]


def own_hint_caches(control: Any) -> None:
    """Give a shallow copy of a ControlNet its own hint caches.

    Newer ComfyUI (after 0.33.0) keeps prepared hints in dicts keyed by size (``cond_hints``,
    ``control_inputs``); a ``copy.copy`` shares them and ``cond_hint = None`` no longer invalidates them,
    so a per-window copy would reuse another window's frames. Older hosts have no such dicts.
    """
    for name in HINT_CACHES:
        if isinstance(getattr(control, name, None), dict):
            setattr(control, name, {})
