"""Test assets for the live server: a tiny random diffusers folder and a synthetic input clip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from tav.checkpoints import sd_scheduler_config

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "tav" / "assets" / "clip_tokenizer"

SCHEDULER = {"_class_name": "DDIMScheduler", **sd_scheduler_config()}


def make_tiny_diffusers(out: Path, seed: int = 0) -> Path:
    """A random SD-shaped diffusers folder (VAE factor 8, cross-attention UNet, 2-layer CLIP)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if (out / "model_index.json").is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
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
