"""Scoring from and to files: read the clips, write the plot and a scores.json (the CLI's ``score`` and
``config --score-clip``)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from .atomic import atomic_output
from .clip_scoring import load_clip
from .editing import edit_stem
from .metrics import EditScores, score_edit
from .progress import ProgressFn
from .score_plot import plot


def read_frames(path: str, frames: int = 0, start: int = 0, stride: int = 1) -> torch.Tensor:
    """``[F, H, W, 3]`` at the file's own size (CLIP resizes; 0 frames = all) from ``start`` every ``stride``."""
    from .video_io import read_video

    return read_video(path, n_frames=frames, start=start, stride=stride, resize="none").frames


def write_plot(path: str | os.PathLike, scores: EditScores) -> str:
    """The per-frame plot as a PNG, written atomically."""
    with atomic_output(path, ".png") as tmp:
        Image.fromarray(plot(scores)).save(tmp, format="PNG")
    return os.path.abspath(path)


def score_written_edits(
    clip_path: str,
    prompts: Sequence[str],
    videos: Sequence[torch.Tensor],
    source: torch.Tensor,
    out_dir: str | os.PathLike,
    device: torch.device,
    callback: Optional[ProgressFn] = None,
) -> tuple[list[str], list[dict]]:
    """Score every edit against its prompt (with the source clip), write ``scores.json`` and one plot per
    edit next to the edits; returns (paths written, the scores as dicts)."""
    clip = load_clip(clip_path, device)
    results, written = [], []
    for i, (prompt, video) in enumerate(zip(prompts, videos, strict=True)):
        scores = score_edit(clip, video, prompt, source, callback=callback)
        written.append(write_plot(Path(out_dir) / f"{edit_stem(i, prompt)}-scores.png", scores))
        results.append(scores.to_dict())
    with atomic_output(Path(out_dir) / "scores.json", ".json") as tmp:
        Path(tmp).write_text(json.dumps(results, indent=1) + "\n")
    return [*written, str(Path(out_dir).resolve() / "scores.json")], results
