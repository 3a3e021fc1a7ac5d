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

from .progress import ProgressFn, report
from .validation import check_finite_tensor, warn


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
        for text in prompts:
            _warn_if_truncated(self.tokenizer, text, max_length)
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
    def encode_video(
        self,
        frames: torch.Tensor,
        sample: Optional[torch.Generator] = None,
        callback: Optional[ProgressFn] = None,
    ) -> torch.Tensor:
        """``[F, H, W, 3]`` in 0..1 -> scaled latents ``[1, C, F, h, w]``.

        Uses the posterior mean unless a generator is given (then one posterior sample, as the
        reference drew, but once rather than every step). ``callback`` runs after every VAE chunk
        (progress, and Cancel for long clips).
        """
        check_frames(frames, self.latent_factor)
        check_finite_tensor(frames, "the input frames", hint="the frames come from a broken source")
        vae_param = next(self.vae.parameters())
        parts = frames.split(max(1, self.vae_batch))
        chunks = []
        for i, part in enumerate(parts):
            x = part.permute(0, 3, 1, 2).to(vae_param.device, vae_param.dtype) * 2 - 1
            dist = self.vae.encode(x).latent_dist
            chunks.append(dist.mean if sample is None else dist.sample(sample))
            report(callback, i + 1, len(parts))
        lat = (torch.cat(chunks) * self.vae_scale).permute(1, 0, 2, 3).unsqueeze(0).float()
        check_finite_tensor(
            lat, "the VAE-encoded latents", hint=f"the VAE overflowed at {vae_param.dtype}; use fp32 precision"
        )
        return lat

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, callback: Optional[ProgressFn] = None) -> torch.Tensor:
        """Scaled latents ``[1, C, F, h, w]`` (or ``[C, F, h, w]``) -> ``[F, H, W, 3]`` float in 0..1 on CPU.

        ``callback`` runs after every VAE chunk. Non-finite latents or decoded pixels raise instead of
        becoming a black video.
        """
        check_finite_tensor(latents, "the latents to decode", hint="sampling diverged; check cfg and the inputs")
        if latents.ndim == 5:
            if latents.shape[0] != 1:
                raise ValueError(f"decode_latents takes one video at a time, got a batch of {latents.shape[0]}")
            latents = latents[0]
        vae_param = next(self.vae.parameters())
        parts = latents.permute(1, 0, 2, 3).split(max(1, self.vae_batch))
        frames = []
        for i, part in enumerate(parts):
            z = part.to(vae_param.device, vae_param.dtype) / self.vae_scale
            x = self.vae.decode(z).sample.float()
            check_finite_tensor(
                x, "the VAE-decoded frames", hint=f"the VAE overflowed at {vae_param.dtype}; use fp32 precision"
            )
            frames.append((x.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).cpu())
            report(callback, i + 1, len(parts))
        return torch.cat(frames)


def _warn_if_truncated(tokenizer: Any, text: str, max_length: int) -> None:
    """Warn (not fail: SD always truncated) when a prompt is longer than the text encoder's window."""
    ids = tokenizer(text, truncation=False, add_special_tokens=True).input_ids
    if len(ids) <= max_length:
        return
    kept = tokenizer.decode(ids[1 : max_length - 1], skip_special_tokens=True)
    dropped = tokenizer.decode(ids[max_length - 1 : -1], skip_special_tokens=True)
    warn(
        f"prompt is {len(ids) - 2} tokens but the text encoder reads {max_length - 2}: ignored the end "
        f"{dropped[:80]!r} (kept {kept[-40:]!r}); shorten the prompt to keep every word"
    )


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
