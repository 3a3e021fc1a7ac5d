"""Window options shared by DDIM Invert and Sample: edit clips longer than the tuned length."""

from __future__ import annotations

from typing import Any, Optional

from comfy_api.v0_0_2 import io

from tav.windows import Windows


def window_inputs() -> list[io.Input]:
    """The window widgets of DDIM Invert and Sample (optional: saved workflows from before them still load)."""
    return [
        io.Int.Input(
            "window",
            optional=True,
            default=0,
            min=0,
            max=1024,
            tooltip="Frames per window for clips longer than the tuned length (e.g. the frames tuned on); memory is "
            "that of one window. 0 = the whole clip in one pass (Sample: or the windows DDIM Invert used).",
        ),
        io.Int.Input(
            "overlap",
            optional=True,
            default=2,
            min=0,
            max=1023,
            tooltip="Frames shared by neighbouring windows, blended so no seam shows. Must be smaller than window.",
        ),
        io.Boolean.Input(
            "anchor_first_frame",
            optional=True,
            default=True,
            tooltip="Every window attends to the clip's first frame (computed once per step), so all windows anchor "
            "on the same frame. Off: each window anchors on its own first frame.",
        ),
    ]


def window_error(window: Any, overlap: Any) -> Optional[str]:
    """A readable message for settings that can never work (the clip length is checked at run time)."""
    if window is None or int(window) == 0:
        return None
    try:
        Windows(int(window), int(overlap if overlap is not None else 0))
    except ValueError as e:
        return str(e)
    return None


def windows_from_widgets(window: int, overlap: int, anchor_first_frame: bool) -> Optional[Windows]:
    return Windows(int(window), int(overlap), anchor=bool(anchor_first_frame)) if int(window) > 0 else None


def describe(windows: Optional[Windows]) -> Optional[dict]:
    """What to store with the inverted latents, so Sample can reuse the same windows."""
    if windows is None:
        return None
    return {"window": windows.length, "overlap": windows.overlap, "anchor_first_frame": windows.anchor}


def sample_windows(window: int, overlap: int, anchor_first_frame: bool, inverted: Optional[dict]) -> Optional[Windows]:
    """Sample's windows: its own widgets, else (window 0) the ones DDIM Invert used, else one pass."""
    own = windows_from_widgets(window, overlap, anchor_first_frame)
    if own is not None or not inverted or not inverted.get("windows"):
        return own
    return windows_from_widgets(**inverted["windows"])
