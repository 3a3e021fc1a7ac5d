"""The whole Tune-A-Video recipe in one call: tune on a clip, invert it once, sample every edit.

Front ends (CLI, demo, the official-config runner) share this; ComfyUI nodes call the steps
separately so that ComfyUI's cache can re-run sampling alone when only an edit prompt changes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import torch

from . import ddim
from .attention import ATTENTION_MODES
from .inflation import NORMS, inflate, is_inflated
from .pipeline import Pipeline
from .progress import ProgressFn
from .tuning import TuneConfig, tune
from .validation import MAX_STEPS, InputError, check_number, check_seed
from .windows import Windows, even_picks

#: phase-aware progress: ``callback(phase, step, total)`` with phase "tune", "invert" or "sample:<i>"
PhaseProgress = Callable[[str, int, int], None]


@dataclasses.dataclass
class EditConfig:
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)
    inversion_steps: int = 50
    #: invert with the source prompt instead of the empty prompt (the reference uses "")
    invert_with_prompt: bool = False
    #: False = start sampling from random noise (the "w/o inversion" ablation)
    use_inversion: bool = True
    steps: int = 50
    guidance_scale: float = 12.5
    eta: float = 0.0
    negative_prompt: str = ""
    seed: int = 33
    norm: str = "video"
    attention: str = "sparse_causal"
    #: edit a clip longer than the tuned length in windows (None: one pass, the reference); tuning
    #: then uses ``windows.length`` frames picked evenly from the clip (see :mod:`tav.windows`)
    windows: Optional[Windows] = None


@dataclasses.dataclass
class EditResult:
    pipeline: Pipeline
    latents: torch.Tensor
    inverted: Optional[torch.Tensor]
    videos: list[torch.Tensor]
    losses: list[float]


def check_edit_config(config: EditConfig) -> None:
    """Every number of an :class:`EditConfig` in range, before any compute (a bad cfg must not cost a tuning run)."""
    t = config.tune
    check_number("tuning steps", t.steps, 0, 100_000, integer=True, hint="the paper uses 500")
    check_number("learning rate", t.lr, 1e-10, 1.0, hint="the paper uses 3e-5")
    check_number("weight decay", t.weight_decay, 0, 10)
    check_number("max grad norm", t.max_grad_norm, 0)
    check_seed("tuning seed", t.seed)
    check_number("inversion steps", config.inversion_steps, 1, MAX_STEPS, integer=True, hint="the paper uses 50")
    check_number("sampling steps", config.steps, 1, MAX_STEPS, integer=True, hint="the paper uses 50")
    check_number("guidance scale", config.guidance_scale, 0, 100, hint="the paper uses 12.5")
    check_number("eta", config.eta, 0, 1, hint="0 is deterministic DDIM (the paper)")
    check_seed("sampling seed", config.seed)
    if config.norm not in NORMS:
        raise InputError(f"norm must be one of {', '.join(NORMS)}, got {config.norm!r}")
    if config.attention not in ATTENTION_MODES:
        raise InputError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {config.attention!r}")


def _phase(callback: Optional[PhaseProgress], name: str) -> Optional[ProgressFn]:
    return None if callback is None else (lambda step, total: callback(name, step, total))


def tune_and_edit(
    pipe: Pipeline,
    frames: torch.Tensor,
    prompt: str,
    edit_prompts: Sequence[str],
    config: EditConfig = EditConfig(),
    callback: Optional[PhaseProgress] = None,
) -> EditResult:
    """Frames ``[F, H, W, 3]`` + caption -> one edited clip ``[F, H, W, 3]`` per edit prompt.

    ``config.tune.steps == 0`` skips tuning (the "w/o tuning" ablation). With ``config.windows``
    the model tunes on a window-sized subsample and inverts/samples the whole clip in windows.
    """
    check_edit_config(config)
    windows = config.windows
    if windows is not None:
        windows.spans(frames.shape[0])  # bad settings fail before any compute
    video = pipe if is_inflated(pipe) else inflate(pipe, norm=config.norm, attention=config.attention)
    latents = video.encode_video(frames)
    source_embeds = video.encode_prompt(prompt)
    losses: list[float] = []
    if config.tune.steps > 0:
        picks = even_picks(frames.shape[0], windows.length) if windows is not None else None
        tune_latents = latents if picks is None else latents[:, :, picks]
        result = tune(video, tune_latents, source_embeds, config.tune, _phase(callback, "tune"), prompt=prompt)
        video, losses = result.pipeline, result.losses
    inverted = None
    if config.use_inversion:
        inverted = ddim.invert(
            video,
            latents,
            steps=config.inversion_steps,
            prompt_embeds=source_embeds if config.invert_with_prompt else None,
            callback=_phase(callback, "invert"),
            windows=windows,
        )
    negative = video.encode_prompt(config.negative_prompt)
    videos = []
    f, h, w = frames.shape[0], frames.shape[1], frames.shape[2]
    for i, text in enumerate(edit_prompts):
        out = ddim.sample(
            video,
            video.encode_prompt(text),
            negative_embeds=negative,
            latents=inverted,
            frames=f,
            height=h,
            width=w,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            eta=config.eta,
            seed=config.seed,
            callback=_phase(callback, f"sample:{i}"),
            windows=windows,
        )
        videos.append(video.decode_latents(out))
    return EditResult(video, latents, inverted, videos, losses)


def write_edits(
    out_dir: str | os.PathLike,
    prompts: Sequence[str],
    videos: Sequence[torch.Tensor],
    fps: float,
    exts: Sequence[str] = (".mp4", ".gif"),
) -> list[str]:
    """One file per edit and extension, named ``NN-<prompt>``; returns the paths written."""
    from .video_io import write_video

    written = []
    for i, (text, frames) in enumerate(zip(prompts, videos, strict=True)):
        stem = edit_stem(i, text)
        written += [str(write_video(Path(out_dir) / (stem + ext), frames, fps)) for ext in exts]
    return written


def edit_stem(i: int, prompt: str) -> str:
    """``NN-<prompt>``: the file name (without extension) of edit ``i``, and of what is written about it."""
    return f"{i:02d}-" + "".join(c if c.isalnum() else "_" for c in prompt)[:60].strip("_")
