"""Shared pieces of the ComfyUI adapters: socket types, folders, device, progress/cancel."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import folder_paths
import torch
from comfy_api.v0_0_2 import io

from tav import memory_plan, validation
from tav.progress import ProgressFn
from tav.tuning import half_dtype

log = logging.getLogger("tuneavideo")

#: socket type carrying a :class:`tav.pipeline.Pipeline`
PIPELINE = io.Custom("TAV_PIPELINE")
#: socket type carrying DDIM-inverted noise: ``{"latents": [1,C,F,h,w] scaled, "steps", "fingerprint", ...}``
INVERTED = io.Custom("TAV_INVERTED")
#: socket type carrying a :class:`tav.control.Control`
CONTROL = io.Custom("TAV_CONTROL")

CATEGORY = "Tune-A-Video"
TUNED_FOLDER = "tuneavideo"
TUNED_EXTS = {".safetensors"}
VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif", ".webp")
PRECISIONS = ["auto", "fp32", "fp16", "bf16"]


def register_folders() -> None:
    """Register ``models/tuneavideo`` (keeping any paths an extra_model_paths.yaml already added)."""
    default = os.path.join(folder_paths.models_dir, TUNED_FOLDER)
    if TUNED_FOLDER in folder_paths.folder_names_and_paths:
        paths, _ = folder_paths.folder_names_and_paths[TUNED_FOLDER]
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[TUNED_FOLDER] = (paths, set(TUNED_EXTS))
    else:
        folder_paths.folder_names_and_paths[TUNED_FOLDER] = ([default], set(TUNED_EXTS))


def device() -> torch.device:
    """The device ComfyUI computes on (honours ``--cpu``)."""
    import comfy.model_management as mm

    return mm.get_torch_device()


def load_dtype(precision: str, dev: torch.device) -> torch.dtype:
    """Weight dtype for a loader's ``precision`` widget: auto = tuning's half type on CUDA (bf16 where
    supported, else fp16: tuning then shares the frozen weights instead of copying them), fp32 elsewhere."""
    if precision == "fp32" or (precision == "auto" and dev.type != "cuda"):
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    return half_dtype(dev)


def free_comfy_memory() -> None:
    """Let ComfyUI's own models make room before tav work on the GPU."""
    import comfy.model_management as mm

    if device().type != "cpu":
        mm.unload_all_models()
        mm.soft_empty_cache()


def progress(label: str = "") -> ProgressFn:
    """A tav progress callback: drives ComfyUI's progress bar and raises on Cancel."""
    import comfy.model_management as mm
    import comfy.utils

    bar: Optional[comfy.utils.ProgressBar] = None
    mm.throw_exception_if_processing_interrupted()

    def callback(step: int, total: int) -> None:
        nonlocal bar
        mm.throw_exception_if_processing_interrupted()
        if bar is None:
            bar = comfy.utils.ProgressBar(total)
        bar.update_absolute(step, total)

    return callback


def check_interrupt() -> None:
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


def size_error(width: Any, height: Any, multiple: int = 8) -> Optional[str]:
    """A readable message when width/height are not positive multiples of ``multiple`` up to the widget max."""
    for name, v in (("width", width), ("height", height)):
        if v is None:
            continue
        if int(v) > validation.MAX_SIDE:
            return f"{name} must be at most {validation.MAX_SIDE}, got {v}"
        if int(v) < multiple or int(v) % multiple:
            ok = max(multiple, int(v) // multiple * multiple)
            return f"{name} must be a positive multiple of {multiple}, got {v} (try {ok})"
    return None


def int_error(name: str, value: Any, lo: int, hi: Optional[int] = None) -> Optional[str]:
    if value is None:
        return None
    if int(value) < lo:
        return f"{name} must be at least {lo}, got {value}"
    if hi is not None and int(value) > hi:
        return f"{name} must be at most {hi}, got {value}"
    return None


def check_choice(name: str, value: Any, options: Sequence[Any]) -> None:
    """Refuse a value that is not one of a combo's options. ComfyUI checks V3 combos against their options
    at /prompt only from about 0.33 on (0.3.64-0.3.75 pass any string through), so the nodes check the
    choices they act on themselves, before any work."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")


def first_error(*messages: Optional[str]) -> bool | str:
    """``True`` if every check passed, else the first message (the VALIDATE_INPUTS convention)."""
    for m in messages:
        if m:
            return m
    return True


def conditioning_embeds(cond: Any) -> torch.Tensor:
    """The token embeddings ``[1, T, D]`` of a stock CONDITIONING (first entry)."""
    if not isinstance(cond, (list, tuple)) or not cond or not isinstance(cond[0][0], torch.Tensor):
        raise ValueError("expected a CONDITIONING from a text encoder node such as CLIP Text Encode")
    if len(cond) > 1:
        log.warning("Tune-A-Video: only the first of %d conditioning entries is used", len(cond))
    emb = cond[0][0]
    return emb[:1] if emb.ndim == 3 else emb.unsqueeze(0)


def widget_bool(value: Any) -> bool:
    return bool(value) and str(value).lower() not in ("false", "0", "no")


def check(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Optional[str]:
    """Run a :mod:`tav.validation` check; its message (for VALIDATE_INPUTS), or None when it passes."""
    try:
        fn(*args, **kwargs)
    except (ValueError, OSError) as e:
        return str(e)
    return None


def number_error(name: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> Optional[str]:
    """Range and finiteness of a widget named in VALIDATE_INPUTS (naming it turns ComfyUI's own min/max off)."""
    if value is None:
        return None
    return check(validation.check_number, name, value, lo, hi, integer=integer)


@contextlib.contextmanager
def tav_warnings() -> Iterator[list[str]]:
    """Collect tav's warnings (fewer frames than asked, a truncated prompt): logged, and returned for the node UI."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", validation.TavWarning)
        yield found
    for w in caught:
        if issubclass(w.category, validation.TavWarning):
            log.warning("Tune-A-Video: %s", w.message)
            found.append(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def with_ui(result: tuple, messages: list[str]) -> io.NodeOutput:
    """A node's return value, with its warnings shown in the UI (and recorded in /history) when there are any."""
    if not messages:
        return io.NodeOutput(*result)
    return io.NodeOutput(*result, ui={"text": [f"warning: {m}" for m in messages]})


def precision_input(tooltip: str = "Weight precision: auto = fp16 on a GPU, fp32 on the CPU.") -> io.Combo.Input:
    return io.Combo.Input("precision", options=PRECISIONS, default="auto", tooltip=tooltip)


def side_input(name: str, tooltip: str) -> io.Int.Input:
    """A width or height widget: a multiple of 8 up to the largest side the pack accepts."""
    return io.Int.Input(name, default=512, min=8, max=validation.MAX_SIDE, step=8, tooltip=tooltip)


def seed_input(tooltip: str, default: int = 0, control_after_generate: Optional[bool] = False) -> io.Int.Input:
    return io.Int.Input("seed", default=default, min=0, max=0xFFFFFFFF, control_after_generate=control_after_generate,
                        tooltip=tooltip)  # fmt: skip


def check_job(pipe: Any, frames: int, height: int, width: int, kind: str, **tuning: Any) -> None:
    """Refuse up front a job that cannot fit the device's memory (the message says what would).

    Before a Tune, ComfyUI's own models are unloaded first (on the GPU), so the free memory the
    planner is held against is what tuning can really get; Invert/Sample leave them (a stock
    ControlNet they use may be among them). ``tuning``: precision and checkpointing of a Tune."""
    if kind == "tune":
        free_comfy_memory()
    # the device the node will compute on: the weights may still be on ComfyUI's offload device
    memory_plan.check_pipeline_job(pipe, int(frames), int(height), int(width), kind, device=device(), **tuning)
