"""Test assets for the live server: a tiny random diffusers folder and a synthetic input clip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from tests.tiny import SCHEDULER, tiny_text_encoder, tiny_unet, tiny_vae

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "tav" / "assets" / "clip_tokenizer"


def make_tiny_diffusers(out: Path, seed: int = 0) -> Path:
    """A random SD-shaped diffusers folder (the unit tests' tiny models, saved as a StableDiffusionPipeline)."""
    if (out / "model_index.json").is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    unet, vae, text = tiny_unet(seed), tiny_vae(seed), tiny_text_encoder(seed)
    unet.save_pretrained(tmp / "unet")
    vae.save_pretrained(tmp / "vae")
    text.save_pretrained(tmp / "text_encoder")
    shutil.copytree(TOKENIZER, tmp / "tokenizer")
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def make_clip(path: Path, frames: int = 8, size: int = 64, fps: float = 8.0) -> Path:
    """A red square moving left to right on white (shapes-world style), written as mp4."""
    from tav.video_io import write_video

    video = np.ones((frames, size, size, 3), dtype=np.float32)
    side = size // 4
    for i in range(frames):
        x = int(round((size - side) * i / max(1, frames - 1)))
        y = size // 2 - side // 2
        video[i, y : y + side, x : x + side] = (0.9, 0.12, 0.12)
    write_video(path, torch.from_numpy(video), fps)
    return path
