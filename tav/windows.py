"""Long clips: invert and sample a clip of any length in overlapping windows of the tuned length.

Why: memory grows with frames, so a model tuned on 8-24 frames cannot denoise a long clip in one
pass on a consumer GPU. Here every DDIM step runs the UNet once per window (memory: one window)
and fuses the windows' predictions into one prediction for the whole clip before the (linear,
per-frame) DDIM update, so overlapping windows agree on every shared frame at every step.

What crosses windows, per step:

- **Frame-0 anchor** (``anchor=True``, default): sparse-causal attention in every window uses the
  clip's frame 0 as its first frame. The window holding frame 0 runs first; each ``attn1`` keeps
  that frame's keys/values and later windows attend to them (computed once per step, shared). A
  later window's first frame attends to ``[frame 0, frame 0]``, as the reference's frame 1 does.
  Without the anchor every window anchors on its own first frame (what stock context windows do).
- **Fusion**: in an overlap the two windows' predictions are blended with linear ramps that sum
  to one on every frame (weights ``1/(o+1) .. o/(o+1)`` for an overlap of ``o``), so no frame
  switches abruptly from one window's prediction to the next.
- **GroupNorm** (``norm``): "window" (default) pools each window's statistics over its own frames,
  exactly what the model saw when it was tuned on a window-sized clip; "first_window" reuses the
  first window's statistics in every window (computed once per step, shared). Pooling over the
  whole clip, as an un-windowed pass does, needs every frame's activations at every layer: it is
  not possible at one window's memory. ``docs/long_videos.md`` measures the choices.

A window as long as the clip is exactly the un-windowed computation (weights are all 1; the tests
hold it bit for bit). Tuning stays on a window-sized subsample (:func:`even_picks`), as the paper
tunes on 24 frames of a longer clip.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Optional

import torch

from .attention import FrameContext, SharedFrame
from .control import Control
from .progress import ProgressFn, report

NORMS = ("window", "first_window")


@dataclasses.dataclass(frozen=True)
class Windows:
    """How to split a long clip: ``length`` frames per window, ``overlap`` frames shared by neighbours."""

    length: int
    overlap: int = 0
    #: keep the clip's frame 0 as every window's sparse-causal anchor
    anchor: bool = True
    #: GroupNorm statistics: "window" (each window's own) or "first_window" (shared from the first)
    norm: str = "window"

    def __post_init__(self) -> None:
        if int(self.length) < 2:
            raise ValueError(f"window must be at least 2 frames, got {self.length}")
        if not 0 <= int(self.overlap) < int(self.length):
            raise ValueError(
                f"overlap must be at least 0 and smaller than the window ({self.length}), got {self.overlap}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"window norm must be one of {', '.join(NORMS)}, got {self.norm!r}")

    def spans(self, frames: int) -> list[tuple[int, int]]:
        """``[(start, end), ...]`` covering ``frames``; the first starts at 0, the last ends at the clip's end.

        Windows step by ``length - overlap``; the last one is moved back to end on the last frame,
        so every window is full length (its overlap with the one before may then be larger).
        """
        if self.length > frames:
            raise ValueError(
                f"window ({self.length} frames) is longer than the clip ({frames} frames): "
                f"use a window of at most {frames} frames, or no window"
            )
        stride = self.length - self.overlap
        starts = list(range(0, frames - self.length + 1, stride))
        if starts[-1] + self.length < frames:
            starts.append(frames - self.length)
        return [(s, s + self.length) for s in starts]


def fusion_weights(spans: list[tuple[int, int]], frames: int) -> list[torch.Tensor]:
    """Per-window frame weights that sum to 1 on every frame: linear ramps across each overlap.

    A window's weight ramps up over its overlap with the previous window and down over its
    overlap with the next (``1/(o+1) .. o/(o+1)`` for an overlap of ``o``), and is 1 elsewhere;
    dividing by the per-frame total keeps the sum exactly 1 where three windows meet.
    """
    raw = []
    for k, (s, e) in enumerate(spans):
        left = spans[k - 1][1] - s if k > 0 else 0
        right = e - spans[k + 1][0] if k + 1 < len(spans) else 0
        j = torch.arange(e - s, dtype=torch.float64)
        w = torch.ones(e - s, dtype=torch.float64)
        if left > 0:
            w = torch.minimum(w, (j + 1) / (left + 1))
        if right > 0:
            w = torch.minimum(w, (e - s - j) / (right + 1))
        raw.append(w)
    total = torch.zeros(frames, dtype=torch.float64)
    for (s, e), w in zip(spans, raw, strict=True):
        total[s:e] += w
    if bool((total <= 0).any()):
        raise AssertionError(f"windows {spans} leave frames uncovered")  # a bug, not a setting
    return [(w / total[s:e]).float() for (s, e), w in zip(spans, raw, strict=True)]


def window_control(control: Optional[Control], start: int, end: int, frames: int) -> Optional[Control]:
    """The ControlNet with the window's own hint frames (each window sees its frames' hints)."""
    if control is None:
        return None
    if control.hint.shape[0] != frames:
        raise ValueError(f"the ControlNet hint has {control.hint.shape[0]} frames but the clip has {frames}")
    return dataclasses.replace(control, hint=control.hint[start:end])


def fused_prediction(
    run: Callable[[torch.Tensor, Optional[Control]], torch.Tensor],
    x: torch.Tensor,
    windows: Windows,
    control: Optional[Control] = None,
    ctx: Optional[FrameContext] = None,
    on_window: Optional[ProgressFn] = None,
) -> torch.Tensor:
    """One step's model output for the whole clip ``x`` ``[B, C, F, h, w]``, window by window.

    ``run(x_window, control_window)`` is the model for one window; ``ctx`` the inflated UNet's frame
    context (None for a 2-D UNet, which has nothing to share); ``on_window(k, n)`` after each window.
    """
    frames = x.shape[2]
    spans = windows.spans(frames)
    weights = fusion_weights(spans, frames)
    sharing = ctx is not None and (windows.anchor or windows.norm == "first_window")
    shared = SharedFrame(anchor=windows.anchor, norm=windows.norm == "first_window") if sharing else None
    acc: Optional[torch.Tensor] = None
    try:
        for k, ((s, e), w) in enumerate(zip(spans, weights, strict=True)):
            if shared is not None:
                shared.record = k == 0
                ctx.shared = shared
            out = run(x[:, :, s:e], window_control(control, s, e, frames))
            if acc is None:
                acc = torch.zeros(out.shape[:2] + (frames,) + out.shape[3:], dtype=out.dtype, device=out.device)
            acc[:, :, s:e] += out * w.to(out.device, out.dtype).view(1, 1, -1, 1, 1)
            report(on_window, k + 1, len(spans))
    finally:
        if ctx is not None:
            ctx.shared = None
    assert acc is not None
    return acc


def even_picks(frames: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over ``frames`` (first and last included): what to tune on."""
    if not 1 <= n <= frames:
        raise ValueError(f"cannot pick {n} of {frames} frames")
    if n == 1:
        return [0]
    return [round(i * (frames - 1) / (n - 1)) for i in range(n)]


def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """``--window``/``--overlap``/``--no-anchor``/``--window-norm`` for the CLI's invert, sample, edit."""
    g = parser.add_argument_group("long clips (windows)")
    g.add_argument("--window", type=int, default=0, help="frames per window (e.g. the tuned length); 0 = one pass")
    g.add_argument("--overlap", type=int, default=None, help="frames shared by neighbouring windows (default window/4)")
    g.add_argument(
        "--no-anchor", action="store_true", help="anchor each window on its own first frame, not the clip's frame 0"
    )
    g.add_argument("--window-norm", choices=NORMS, default="window", help="GroupNorm statistics per window or shared")


def from_cli(args: argparse.Namespace) -> Optional[Windows]:
    """The :class:`Windows` the CLI options ask for, or None (one pass) without ``--window``."""
    if not args.window:
        if args.overlap is not None:
            raise ValueError("--overlap needs --window")
        return None
    overlap = args.window // 4 if args.overlap is None else args.overlap
    return Windows(args.window, overlap, anchor=not args.no_anchor, norm=args.window_norm)
