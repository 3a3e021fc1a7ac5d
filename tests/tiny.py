"""Tiny random Stable-Diffusion-shaped pipelines for CPU tests (built from configs, seeded)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tav.checkpoints import sd_scheduler_config
from tav.pipeline import Pipeline
from tav.weights import fingerprint

ASSETS = Path(__file__).resolve().parents[1] / "tav" / "assets"

SCHEDULER = {"_class_name": "DDIMScheduler", **sd_scheduler_config()}


def tiny_unet(
    seed: int = 0,
    channels: tuple[int, ...] = (32, 64),
    cross_dim: int = 32,
    heads: int = 4,
    sample_size: int = 8,
) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    n = len(channels)
    down = ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cross_dim,
        attention_head_dim=heads,
        norm_num_groups=8,
    ).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=(8, 16, 16, 16),  # four levels: 8 pixels per latent pixel, as SD
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    ).eval()


def tiny_text_encoder(seed: int = 0, hidden: int = 32) -> CLIPTextModel:
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(cfg).eval()


def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(ASSETS / "clip_tokenizer"), local_files_only=True)


def tiny_pipeline(seed: int = 0, prediction_type: str = "epsilon", **unet_kwargs: object) -> Pipeline:
    unet = tiny_unet(seed, **unet_kwargs)
    return Pipeline(
        unet=unet,
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(seed, hidden=unet.config.cross_attention_dim),
        tokenizer=tokenizer(),
        scheduler_config={**SCHEDULER, "prediction_type": prediction_type},
        base_fingerprint=fingerprint(unet),
        source=f"tiny-random-{seed}",
    )
