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
from collections.abc import Sequence
from typing import Any, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from . import __version__
from .atomic import atomic_output, verify_written
from .attention import ATTENTION_MODES
from .inflation import NORMS, TEMPORAL_KEYS, VideoUNet, inflate, is_inflated, share_weights_copy
from .pipeline import Pipeline
from .tuning import DEFAULT_TRAINABLE, trainable_names
from .validation import InputError, check_finite_tensor, check_finite_tensors, check_input_file

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
    check_finite_tensors(tensors, "the tuned model", hint="nothing was saved; tuning diverged, lower the learning rate")
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
    """Serialise in memory, write through :func:`tav.atomic.atomic_output` (umask, no partial file), read back."""
    data = save(tensors, metadata=meta)

    def reads_back(tmp: str) -> None:
        size = os.path.getsize(tmp)
        if size != len(data):
            raise ValueError(f"{size} of {len(data)} bytes on disk")
        with safe_open(tmp, "pt") as f:
            if set(f.keys()) != set(tensors):
                raise ValueError("the tensor names differ from what was saved")

    with atomic_output(path, ".safetensors") as tmp:
        _write_file(tmp, data)
        verify_written(tmp, path, reads_back)


def _write_file(path: str, data: bytes) -> None:
    """The one place tuned weights and latents hit the disk (so a full disk raises a plain OSError here)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_latents(path: str | os.PathLike, latents: torch.Tensor, meta: Optional[dict[str, str]] = None) -> None:
    """Store an inverted latent (786 KB for 24 frames at 64x64) so inversion runs once per tuned model."""
    check_finite_tensor(latents, "the inverted latents", hint="nothing was saved; check the model and settings")
    _atomic_save(
        {"latents": latents.detach().float().contiguous().cpu()}, path, {"format": "tav-latents/1", **(meta or {})}
    )


def _open(path: str, what: str) -> Any:
    """``safe_open`` with one readable message naming the file when it is not a safetensors file."""
    try:
        return safe_open(path, "pt")
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(
            f"{what} {path!r} is not a readable .safetensors file ({_first_line(e)}): it may be truncated "
            "or not a safetensors file at all; re-create it"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def load_latents(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, str]]:
    """An inverted latent written by :func:`save_latents`, checked (format, shape, finite values)."""
    path = check_input_file(path, "latents file")
    with _open(path, "latents file") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "tav-latents/1":
            raise InputError(
                f"{path} is not a latents file (format {meta.get('format')!r}); pass the file written by "
                "`python -m tav invert`"
            )
        if "latents" not in set(f.keys()):
            raise InputError(f"{path} has no 'latents' tensor: it is damaged; re-run `python -m tav invert`")
        try:
            latents = f.get_tensor("latents")
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{path}: the latents tensor cannot be read ({_first_line(e)}); re-run invert") from None
    if latents.ndim != 5 or latents.shape[0] != 1 or not latents.is_floating_point():
        raise InputError(f"{path}: latents must be one video [1, C, frames, h, w], got shape {tuple(latents.shape)}")
    check_finite_tensor(latents, f"latents file {path!r}", hint="the file is corrupted; re-run invert")
    for key in ("fps", "steps"):
        if key in meta:
            try:
                value = float(meta[key])
            except ValueError:
                value = float("nan")
            if not (value > 0 and value < 1e6):
                raise InputError(f"{path}: metadata {key}={meta[key]!r} is not a positive number; re-run invert")
    return latents, meta


#: metadata every tuned-weights file must carry to be applied safely
REQUIRED_META = ("base_fingerprint", "trainable_modules", "norm", "attention")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a tuned-weights file, checked for the fields loading needs."""
    path = check_input_file(path, "tuned weights")
    with _open(path, "tuned weights") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise InputError(
            f"{path} is not a Tune-A-Video tuned-weights file (format {meta.get('format')!r}, "
            f"expected {FORMAT!r}); pass a file written by `tune` / Save Tuned (official full checkpoints load "
            "as --model instead)"
        )
    missing = [k for k in REQUIRED_META if not meta.get(k)]
    if missing:
        raise InputError(f"{path} lacks the metadata {', '.join(missing)}: it is damaged or hand-made; re-save it")
    try:
        modules = json.loads(meta["trainable_modules"])
        ok = isinstance(modules, list) and all(isinstance(m, str) for m in modules)
    except ValueError:
        ok = False
    if not ok:
        raise InputError(f"{path}: metadata trainable_modules is not a JSON list of names; re-save the file")
    for key in ("frames", "height", "width"):
        if meta.get(key) and not meta[key].isdigit():
            raise InputError(f"{path}: metadata {key}={meta[key]!r} is not a whole number; re-save the file")
    if meta["norm"] not in NORMS or meta["attention"] not in ATTENTION_MODES:
        raise InputError(
            f"{path}: unknown norm/attention {meta['norm']!r}/{meta['attention']!r} in its metadata "
            f"(this version knows norm {'/'.join(NORMS)}, attention {'/'.join(ATTENTION_MODES)}); "
            "it was saved by a newer version or damaged"
        )
    return meta


def load_tuned(path: str | os.PathLike, pipe: Pipeline, *, check_base: bool = True) -> Pipeline:
    """Apply tuned weights to ``pipe`` (2-D or inflated) and return a new pipeline; ``pipe`` is untouched.

    Refuses weights tuned on another base model unless ``check_base`` is False.
    """
    meta = read_metadata(path)
    path = os.path.abspath(os.fspath(path))
    if check_base:
        mine = base_fingerprint(pipe)
        if meta["base_fingerprint"] != mine:
            raise ValueError(
                f"these tuned weights were made for another base model (fingerprint {meta['base_fingerprint']}, "
                f"source {meta.get('base_source') or 'unknown'}), but this model's fingerprint is {mine} "
                f"({pipe.source or 'unknown source'}). Load the checkpoint they were tuned from."
            )
    if not is_inflated(pipe):
        video = inflate(pipe, norm=meta["norm"], attention=meta["attention"])
    elif (pipe.unet.norm, pipe.unet.attention) != (meta["norm"], meta["attention"]):
        raise InputError(
            f"{path} was tuned with norm={meta['norm']}, attention={meta['attention']}, but this pipeline is "
            f"inflated with norm={pipe.unet.norm}, attention={pipe.unet.attention}; load the weights onto the "
            "2-D pipeline (they inflate it as they were tuned) or inflate with the same options"
        )
    else:
        video = pipe
    with _open(path, "tuned weights") as f:
        try:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"tuned weights {path!r} cannot be read ({_first_line(e)}): re-save them") from None
    if not tensors:
        raise InputError(f"tuned weights {path!r} hold no tensors: re-save them")
    check_finite_tensors(tensors, f"tuned weights {path!r}", hint="the file is corrupted; re-run Tune or re-copy it")
    params = dict(video.unet.unet.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise InputError(f"{path} holds tensors this UNet does not have, e.g. {unknown[:3]}: wrong architecture")
    unet = share_weights_copy(video.unet, [params[k] for k in tensors])
    owned = dict(unet.unet.named_parameters())
    with torch.no_grad():
        for k, v in tensors.items():
            if owned[k].shape != v.shape:
                raise InputError(f"{path}: {k} has shape {tuple(v.shape)}, model has {tuple(owned[k].shape)}")
            owned[k].copy_(v)
    info = {
        "prompt": meta.get("prompt", ""),
        "trainable_modules": json.loads(meta["trainable_modules"]),
        **{k: int(meta.get(k) or 0) for k in ("frames", "height", "width")},
    }
    return video.replace(unet=unet, info=info)
