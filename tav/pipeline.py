"""The bundle of models Tune-A-Video works on, and the encode/decode steps around the UNet.

A :class:`Pipeline` is deliberately a plain dataclass: no hidden state, no hub access. Loaders in
:mod:`tav.checkpoints` build one from files; :func:`tav.inflation.inflate` swaps its 2-D UNet for a
:class:`tav.inflation.VideoUNet`; :func:`tav.tuning.tune` returns a new one that shares the frozen
weights. Video tensors follow the reference layout: pixels ``[F, H, W, 3]`` in 0..1 (ComfyUI's IMAGE
layout), latents ``[B, C, F, h, w]`` already multiplied by the VAE scaling factor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn


@dataclasses.dataclass
class Pipeline:
    """Stable-Diffusion-style components. ``unet`` is 2-D until inflated."""

    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler_config: dict
    #: fingerprint of the base model's UNet weights (see :func:`tav.weights.fingerprint`)
    base_fingerprint: str = ""
    #: free-form description of where the weights came from, for metadata and error messages
    source: str = ""
    #: how many frames the VAE encodes/decodes at once (memory vs speed)
    vae_batch: int = 1
    #: what tuning recorded (prompt, frames, height, width, trainable_modules); saved as metadata
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def vae_scale(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    @property
    def latent_factor(self) -> int:
        """Pixels per latent pixel (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def replace(self, **changes: Any) -> Pipeline:
        return dataclasses.replace(self, **changes)

    @torch.no_grad()
    def encode_prompt(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Token embeddings ``[N, 77, D]`` (last hidden state, as SD uses)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        max_length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        tok = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = next(self.text_encoder.parameters()).device
        out = self.text_encoder(tok.input_ids.to(device))
        return out[0]

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor, sample: Optional[torch.Generator] = None) -> torch.Tensor:
        """``[F, H, W, 3]`` in 0..1 -> scaled latents ``[1, C, F, h, w]``.

        Uses the posterior mean unless a generator is given (then one posterior sample, as the
        reference drew, but once rather than every step).
        """
        check_frames(frames, self.latent_factor)
        vae_param = next(self.vae.parameters())
        x = frames.permute(0, 3, 1, 2).to(vae_param.device, vae_param.dtype) * 2 - 1
        chunks = []
        for part in x.split(max(1, self.vae_batch)):
            dist = self.vae.encode(part).latent_dist
            chunks.append(dist.mean if sample is None else dist.sample(sample))
        lat = torch.cat(chunks) * self.vae_scale
        return lat.permute(1, 0, 2, 3).unsqueeze(0).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[1, C, F, h, w]`` (or ``[C, F, h, w]``) -> ``[F, H, W, 3]`` float in 0..1 on CPU."""
        if latents.ndim == 5:
            if latents.shape[0] != 1:
                raise ValueError(f"decode_latents takes one video at a time, got a batch of {latents.shape[0]}")
            latents = latents[0]
        vae_param = next(self.vae.parameters())
        z = latents.permute(1, 0, 2, 3).to(vae_param.device, vae_param.dtype) / self.vae_scale
        frames = [self.vae.decode(part).sample for part in z.split(max(1, self.vae_batch))]
        x = torch.cat(frames).float().clamp(-1, 1) / 2 + 0.5
        return x.permute(0, 2, 3, 1).cpu()


def check_frames(frames: torch.Tensor, multiple: int = 8) -> None:
    """Raise a ValueError that says what to fix if ``frames`` is not a usable ``[F, H, W, 3]`` clip."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"expected video frames shaped [frames, height, width, 3], got {shape}")
    f, h, w, _ = frames.shape
    if f < 1:
        raise ValueError("the video has no frames: check start/stride/n_frames against the clip length")
    if h % multiple or w % multiple:
        raise ValueError(
            f"frame size {w}x{h} is not a multiple of {multiple}: resize the video to e.g. "
            f"{w // multiple * multiple}x{h // multiple * multiple}"
        )
