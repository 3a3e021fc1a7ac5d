"""Run the official Tune-A-Video YAML configs (``configs/*.yaml`` of the reference) unchanged.

The config's keys map one-to-one onto :class:`tav.editing.EditConfig`; only the model path (a hub
name in the originals) and, for smoke runs, explicit ``--set key=value`` overrides change. The
reference's validation every 100 steps is not repeated: we tune once, invert once, then sample
each validation prompt, which is what its final validation does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from .editing import EditConfig, PhaseProgress, check_edit_config, tune_and_edit, write_edits
from .tuning import TuneConfig, half_dtype
from .validation import check_output_dir
from .windows import Windows

#: ``on_edits(prompts, videos, source frames, samples folder) -> paths written``
OnEdits = Callable[[Sequence[str], Sequence[torch.Tensor], torch.Tensor, Path], list[str]]


def _set(cfg: dict, dotted: str, raw: str) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for key in parents:
        if not isinstance(node.get(key), dict):
            raise ValueError(f"--set {dotted}: {key!r} is not a section of the config")
        node = node[key]
    if leaf not in node:
        raise ValueError(f"--set {dotted}: the config has no key {leaf!r}")
    node[leaf] = yaml.safe_load(raw)


def load_reference_config(path: str | os.PathLike, overrides: Optional[dict[str, str]] = None) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid YAML ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} is not a Tune-A-Video config: expected a YAML mapping")
    for key in ("pretrained_model_path", "train_data", "validation_data"):
        if key not in cfg:
            raise ValueError(f"{path} is not a Tune-A-Video config: it has no {key!r}")
    for k, v in (overrides or {}).items():
        _set(cfg, k, v)
    return cfg


def edit_config(cfg: dict[str, Any]) -> EditConfig:
    """The reference config's training and validation settings as an :class:`EditConfig`."""
    val = cfg["validation_data"]
    return EditConfig(
        tune=TuneConfig(
            steps=int(cfg.get("max_train_steps", 500)),
            lr=float(cfg.get("learning_rate", 3e-5)),
            weight_decay=float(cfg.get("adam_weight_decay", 1e-2)),
            max_grad_norm=float(cfg.get("max_grad_norm", 1.0)),
            seed=int(cfg.get("seed", 33)),
            trainable_modules=tuple(cfg.get("trainable_modules", TuneConfig().trainable_modules)),
            gradient_checkpointing=bool(cfg.get("gradient_checkpointing", True)),  # the configs: True
        ),
        inversion_steps=int(val.get("num_inv_steps", 50)),
        use_inversion=bool(val.get("use_inv_latent", True)),
        steps=int(val.get("num_inference_steps", 50)),
        guidance_scale=float(val.get("guidance_scale", 7.5)),
        seed=int(cfg.get("seed", 33)),
    )


def _find_video(video_path: str, config_path: Path, video_dir: Optional[str]) -> Path:
    candidates = [Path(video_path)]
    if video_dir:
        candidates.insert(0, Path(video_dir) / Path(video_path).name)
    candidates.append(config_path.parent.parent / "videos" / Path(video_path).name)  # official_examples layout
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"the config's video {video_path!r} was not found (looked in {[str(c) for c in candidates]}); "
        "pass --video-dir with the folder holding it"
    )


def run_reference_config(
    config_path: str | os.PathLike,
    *,
    pretrained: Optional[str] = None,
    device: torch.device = torch.device("cpu"),
    video_dir: Optional[str] = None,
    output_dir: Optional[str] = None,
    overrides: Optional[dict[str, str]] = None,
    callback: Optional[PhaseProgress] = None,
    whole_clip_overlap: Optional[int] = None,
    on_edits: Optional[OnEdits] = None,
) -> list[str]:
    """Tune, invert and sample every validation prompt of one official config; returns written files.

    ``whole_clip_overlap``: edit the whole source clip (every ``sample_frame_rate``-th frame from
    ``sample_start_idx`` to the end) in windows of ``n_sample_frames`` overlapping by this much,
    tuning on ``n_sample_frames`` frames picked evenly from it (see :mod:`tav.windows`).
    ``on_edits(prompts, videos, source frames, samples folder)`` runs once the edits are written and
    returns what it wrote (e.g. scores: ``config --score-clip``).
    """
    from .checkpoints import load_pipeline
    from .video_io import read_video
    from .weights import save_tuned

    config_path = Path(config_path)
    cfg = load_reference_config(config_path, overrides)
    model = pretrained or cfg["pretrained_model_path"]
    if not os.path.exists(model):
        raise FileNotFoundError(f"model {model!r} not found locally; pass --pretrained PATH (no downloads here)")
    train, val = cfg["train_data"], cfg["validation_data"]
    try:
        ecfg = edit_config(cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{config_path}: a setting is not a number ({e})") from None
    check_edit_config(ecfg)
    out = Path(output_dir or cfg.get("output_dir", "outputs"))
    check_output_dir(out)
    if int(val.get("video_length", train["n_sample_frames"])) != int(train["n_sample_frames"]):
        raise ValueError("validation_data.video_length must equal train_data.n_sample_frames (inverted latents)")
    clip = read_video(
        _find_video(train["video_path"], config_path, video_dir),
        n_frames=int(train["n_sample_frames"]) if whole_clip_overlap is None else 0,
        start=int(train.get("sample_start_idx", 0)),
        stride=int(train.get("sample_frame_rate", 1)),
        width=int(train["width"]),
        height=int(train["height"]),
    )
    dtype = half_dtype(device) if device.type == "cuda" else torch.float32  # what tuning autocasts to
    if whole_clip_overlap is not None:
        ecfg.windows = Windows(int(train["n_sample_frames"]), whole_clip_overlap)
        ecfg.windows.spans(clip.frames.shape[0])  # a window longer than the clip fails before loading
    pipe = load_pipeline(model, device=device, dtype=dtype)
    result = tune_and_edit(pipe, clip.frames, train["prompt"], val["prompts"], ecfg, callback)
    written = write_edits(out / "samples", val["prompts"], result.videos, clip.fps, exts=(".gif",))
    save_tuned(out / "tuned.safetensors", result.pipeline)
    extra = on_edits(val["prompts"], result.videos, clip.frames, out / "samples") if on_edits else []
    return [*written, str(out / "tuned.safetensors"), *extra]
