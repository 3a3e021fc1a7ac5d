"""Tuned weights: only what tuning changed or inflation added, as ``.safetensors`` with metadata.

A tuned SD1.5 is ~74M trained parameters plus the temporal LayerNorms (~300 MB fp32, ~150 MB
fp16), against the reference's 3.6 GB pickled UNet. The metadata names the base model by a
fingerprint of its weights, so loading onto a different base fails with a clear message instead
of silently producing garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .inflation import TEMPORAL_KEYS, VideoUNet, inflate, is_inflated, share_weights_copy
from .pipeline import Pipeline
from .tuning import DEFAULT_TRAINABLE, trainable_names

FORMAT = "tav-tuned/1"
_SAMPLE = 4096  # values per tensor that enter the fingerprint


def _base_items(unet: nn.Module) -> list[tuple[str, torch.Tensor]]:
    inner = unet.unet if isinstance(unet, VideoUNet) else unet
    return sorted((k, v) for k, v in inner.state_dict().items() if not any(s in k for s in TEMPORAL_KEYS))


def fingerprint(unet: nn.Module) -> str:
    """A short hash of a 2-D UNet's weights (a strided sample of every tensor, rounded to fp16).

    Cheap enough for an 860M-parameter UNet, precision-independent (fp32 and fp16 loads of one
    checkpoint agree), and different for any real fine-tune (DreamBooth changes every tensor).
    """
    return fingerprint_items(_base_items(unet))


def fingerprint_items(items: Sequence[tuple[str, torch.Tensor]]) -> str:
    """:func:`fingerprint` of ``(diffusers key, tensor)`` pairs sorted by key (any source of weights)."""
    h = hashlib.sha256()
    for name, t in items:
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLE)
        sample = flat[::step][:_SAMPLE].to("cpu", torch.float16)
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def base_fingerprint(pipe: Pipeline) -> str:
    return pipe.base_fingerprint or fingerprint(pipe.unet)


def save_tuned(
    path: str | os.PathLike,
    pipe: Pipeline,
    *,
    trainable_modules: Optional[Sequence[str]] = None,
    prompt: Optional[str] = None,
    frames: Optional[int] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    extra: Optional[dict[str, str]] = None,
) -> dict[str, str]:
    """Write the trainable and temporal tensors of an inflated, tuned pipeline; returns the metadata.

    Unset fields come from ``pipe.info`` (what :func:`tav.tuning.tune` recorded). Written to a
    temporary file and renamed, so a crash never leaves a half-written file.
    """
    if not is_inflated(pipe):
        raise ValueError("save_tuned() needs an inflated (and tuned) pipeline")
    info = pipe.info
    trainable_modules = trainable_modules or info.get("trainable_modules") or DEFAULT_TRAINABLE
    prompt = info.get("prompt", "") if prompt is None else prompt
    frames, height, width = (
        info.get(k, 0) if v is None else v for k, v in (("frames", frames), ("height", height), ("width", width))
    )
    inner = pipe.unet.unet
    names = set(trainable_names(inner, trainable_modules))
    sd = inner.state_dict()
    tensors = {
        k: v.detach().contiguous().cpu() for k, v in sd.items() if k in names or any(s in k for s in TEMPORAL_KEYS)
    }
    meta = {
        "format": FORMAT,
        "tav_version": __version__,
        "base_fingerprint": base_fingerprint(pipe),
        "base_source": pipe.source,
        "trainable_modules": json.dumps(list(trainable_modules)),
        "norm": pipe.unet.norm,
        "attention": pipe.unet.attention,
        "prediction_type": pipe.prediction_type,
        "prompt": prompt,
        "frames": str(frames),
        "height": str(height),
        "width": str(width),
        **(extra or {}),
    }
    _atomic_save(tensors, path, meta)
    return meta


def _atomic_save(tensors: dict[str, torch.Tensor], path: str | os.PathLike, meta: dict[str, str]) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".safetensors.tmp", dir=folder)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_latents(path: str | os.PathLike, latents: torch.Tensor, meta: Optional[dict[str, str]] = None) -> None:
    """Store an inverted latent (786 KB for 24 frames at 64x64) so inversion runs once per tuned model."""
    _atomic_save(
        {"latents": latents.detach().float().contiguous().cpu()}, path, {"format": "tav-latents/1", **(meta or {})}
    )


def load_latents(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, str]]:
    with safe_open(os.fspath(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "tav-latents/1":
            raise ValueError(f"{os.fspath(path)} is not a latents file written by `python -m tav invert`")
        return f.get_tensor("latents"), meta


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    with safe_open(os.fspath(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{os.fspath(path)} is not a Tune-A-Video tuned-weights file (format {meta.get('format')!r}, "
            f"expected {FORMAT!r}); official full checkpoints load with tav.checkpoints instead"
        )
    return meta


def load_tuned(path: str | os.PathLike, pipe: Pipeline, *, check_base: bool = True) -> Pipeline:
    """Apply tuned weights to ``pipe`` (2-D or inflated) and return a new pipeline; ``pipe`` is untouched.

    Refuses weights tuned on another base model unless ``check_base`` is False.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tuned weights not found: {path}")
    meta = read_metadata(path)
    if check_base:
        mine = base_fingerprint(pipe)
        if meta["base_fingerprint"] != mine:
            raise ValueError(
                f"these tuned weights were made for another base model (fingerprint {meta['base_fingerprint']}, "
                f"source {meta.get('base_source') or 'unknown'}), but this model's fingerprint is {mine} "
                f"({pipe.source or 'unknown source'}). Load the checkpoint they were tuned from."
            )
    video = pipe if is_inflated(pipe) else inflate(pipe, norm=meta["norm"], attention=meta["attention"])
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    params = dict(video.unet.unet.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ValueError(f"{path} holds tensors this UNet does not have, e.g. {unknown[:3]}: wrong architecture")
    unet = share_weights_copy(video.unet, [params[k] for k in tensors])
    owned = dict(unet.unet.named_parameters())
    with torch.no_grad():
        for k, v in tensors.items():
            if owned[k].shape != v.shape:
                raise ValueError(f"{k}: file has shape {tuple(v.shape)}, model has {tuple(owned[k].shape)}")
            owned[k].copy_(v)
    info = {
        "prompt": meta.get("prompt", ""),
        "trainable_modules": json.loads(meta["trainable_modules"]),
        **{k: int(meta.get(k) or 0) for k in ("frames", "height", "width")},
    }
    return video.replace(unet=unet, info=info)
