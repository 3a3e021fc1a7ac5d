"""Long clips on the native path: ComfyUI's context windows over the tuned MODEL, as ``tav`` windows them.

A subclass of ComfyUI's ``IndexListContextHandler`` (its sampling hook, per-window cond slicing and
fusion stay ComfyUI's), with ``tav.windows``' spans and fusion ramps, two workarounds and the anchor:

- ``set_step`` compares the per-frame timestep batch with ``sample_sigmas`` and raises a size
  mismatch when frames are the batch (ComfyUI 0.3.64-0.3.75): it gets one timestep there
  (:func:`nodes.compat.set_step_timestep`);
- ControlNet hints are not windowed (every window's ControlNet sees hint frames ``0..L-1``): each
  window's conds get ControlNet copies holding the window's own hint frames (its ``index_list``);
- newer hosts prepend the preceding frame to each window (``causal_window_fix``): off, so a window is
  exactly its ``index_list``, as in ``tav`` (:func:`nodes.compat.disable_causal_window_fix`);
- the frame-0 anchor: every window's sparse-causal attention attends to the clip's frame 0,
  recorded by the first window once per step (:class:`nodes.native.FrameAnchor`), as ``tav`` does.

The TAV patches' frame count is the window's: the frame wrapper divides the window's batch by its conds.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import comfy.context_windows as cw
import torch
from comfy_api.v0_0_2 import io

from tav.windows import Windows, fusion_weights

from . import compat
from .common import CATEGORY, check_choice, first_error
from .native import FrameAnchor, has_tuned
from .windows import window_error

#: ``tav.windows``' linear ramps over each overlap (weights sum to 1 on every frame): the pipeline path's fusion
TAV_FUSE = "tav-linear"
FUSE_METHODS = [TAV_FUSE, *cw.ContextFuseMethods.LIST_STATIC]


def _tav_schedule(frames: int, handler: TAVContextHandler, model_options: dict) -> list[list[int]]:
    return [list(range(s, e)) for s, e in handler.windows.spans(frames)]


def _tav_weights(length: int, full_length: int, idxs: list[int], handler: TAVContextHandler, **_: Any) -> list[float]:
    spans = handler.windows.spans(full_length)
    return fusion_weights(spans, full_length)[spans.index((idxs[0], idxs[-1] + 1))].tolist()


def windowed_control(control: Any, window: cw.IndexListContextWindow, frames: int, memo: dict) -> Any:
    """A copy of a ControlNet chain whose per-frame hints are the window's frames (shared weights).

    A hint of one image applies to every frame and stays; any other frame count must be the clip's.
    ``memo`` (one per window) gives conds sharing a ControlNet one copy, so ComfyUI still batches them.
    """
    if control is None:
        return None
    if id(control) in memo:
        return memo[id(control)]
    out = memo[id(control)] = copy.copy(control)
    hint = getattr(control, "cond_hint_original", None)
    if isinstance(hint, torch.Tensor) and hint.shape[0] != 1:
        if hint.shape[0] != frames:
            raise ValueError(
                f"the ControlNet hint has {hint.shape[0]} frames but the clip has {frames}: give one hint per frame"
            )
        out.cond_hint_original = window.get_tensor(hint)
        out.cond_hint = None  # rebuilt from the window's frames at the window's size
        compat.own_hint_caches(out)
    out.previous_controlnet = windowed_control(control.previous_controlnet, window, frames, memo)
    return out


class TAVContextHandler(cw.IndexListContextHandler):
    """ComfyUI's index-list context windows with ``tav``'s windows, anchor and per-window ControlNet hints."""

    def __init__(self, windows: Windows, fuse_method: str = TAV_FUSE) -> None:
        fuse = cw.ContextFuseMethod(TAV_FUSE, _tav_weights) if fuse_method == TAV_FUSE else None
        super().__init__(
            context_schedule=cw.ContextSchedule("tav", _tav_schedule),
            fuse_method=fuse or cw.get_matching_fuse_method(fuse_method),
            context_length=windows.length,
            context_overlap=windows.overlap,
        )
        compat.disable_causal_window_fix(self)
        self.windows = windows

    def should_use_context(self, model: Any, conds: Any, x_in: torch.Tensor, timestep: Any, model_options: Any) -> bool:
        # always windowed (a window as long as the clip is one window); a window longer than the clip is refused
        self.windows.spans(x_in.size(self.dim))
        return True

    def set_step(self, timestep: torch.Tensor, model_options: dict) -> None:
        super().set_step(compat.set_step_timestep(cw.IndexListContextHandler, timestep), model_options)

    def get_context_windows(self, model: Any, x_in: torch.Tensor, model_options: dict) -> list:
        windows = super().get_context_windows(model, x_in, model_options)
        kv: dict = {}  # one step's frame-0 keys/values, shared by its windows
        for w in windows:
            w.tav_controls = {}  # the window's ControlNet copies (see windowed_control)
            if self.windows.anchor:
                w.tav_anchor = FrameAnchor(kv, record=w.index_list[0] == 0)
        return windows

    def get_resized_cond(self, cond_in: Any, x_in: torch.Tensor, window: Any, device: Any = None) -> Optional[list]:
        resized = super().get_resized_cond(cond_in, x_in, window, device)
        if resized is None:
            return None
        frames, memo = x_in.size(self.dim), window.tav_controls
        return [
            {**c, "control": windowed_control(c["control"], window, frames, memo)}
            if c.get("control") is not None
            else c
            for c in resized
        ]


def context_windows(model: Any, windows: Windows, fuse_method: str = TAV_FUSE) -> Any:
    """A clone of a Tune-A-Video MODEL that samples clips window by window (``model`` is not changed)."""
    if not has_tuned(model):
        raise ValueError("context windows need the MODEL from Tune-A-Video → MODEL (TAV_ApplyToModel)")
    if fuse_method not in FUSE_METHODS:
        raise ValueError(f"fuse_method must be one of {', '.join(FUSE_METHODS)}, got {fuse_method!r}")
    clone = model.clone()
    clone.model_options["context_handler"] = TAVContextHandler(windows, fuse_method)
    cw.create_prepare_sampling_wrapper(clone)  # memory estimates count one window's frames
    return clone


class TAV_ContextWindows(io.ComfyNode):
    """Sample clips longer than the tuned length on the native path, window by window."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_ContextWindows",
            display_name="Context Windows (Tune-A-Video)",
            category=f"{CATEGORY}/native",
            description="ComfyUI's context windows for the Tune-A-Video MODEL, windowed like Sample (Tune-A-Video): "
            "each window's ControlNet sees its own hint frames, and every window can attend to the clip's first "
            "frame.",
            inputs=[
                io.Model.Input("model", tooltip="From Tune-A-Video → MODEL."),
                io.Int.Input(
                    "window",
                    default=8,
                    min=2,
                    max=1024,
                    tooltip="Frames per window, e.g. the frames tuned on; at most the clip's frames.",
                ),
                io.Int.Input(
                    "overlap",
                    default=2,
                    min=0,
                    max=1023,
                    tooltip="Frames shared by neighbouring windows, blended so no seam shows. Less than window.",
                ),
                io.Boolean.Input(
                    "anchor_first_frame",
                    default=True,
                    tooltip="Every window attends to the clip's first frame (computed once per step), so all windows "
                    "anchor on the same frame. Off: each window anchors on its own first frame.",
                ),
                io.Combo.Input(
                    "fuse_method",
                    options=FUSE_METHODS,
                    default=TAV_FUSE,
                    tooltip=f"How overlapping windows are blended. {TAV_FUSE}: linear ramps over each overlap, as "
                    "Sample (Tune-A-Video) does; the others are ComfyUI's.",
                ),
            ],
            outputs=[
                io.Model.Output(
                    "model_out",
                    display_name="model",
                    tooltip="The tuned MODEL denoising the LATENT's frames in overlapping windows (memory: one window).",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, window: Optional[int] = None, overlap: Optional[int] = None) -> bool | str:
        return first_error(window_error(window, overlap))

    @classmethod
    def execute(
        cls, model: Any, window: int, overlap: int, anchor_first_frame: bool, fuse_method: str
    ) -> io.NodeOutput:
        check_choice("fuse_method", fuse_method, FUSE_METHODS)
        windows = Windows(int(window), int(overlap), anchor=bool(anchor_first_frame))
        return io.NodeOutput(context_windows(model, windows, fuse_method))
