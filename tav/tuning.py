"""One-shot tuning: fit a few attention projections of the inflated UNet to one clip.

As the paper and reference: trainable ``attn1.to_q``, ``attn2.to_q`` and all of ``attn_temp``;
DDPM noise at one uniform timestep per step; epsilon (or v) target; MSE; AdamW lr 3e-5, weight
decay 1e-2, gradient clipping 1.0; batch 1; 500 steps. Unlike the reference, the clip's latents and
the prompt embedding come in pre-computed (encoded once, not every step), and the result is a new
pipeline that shares the frozen weights with the input and owns copies of the trained ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .ddim import alphas_cumprod
from .inflation import VideoUNet, share_weights_copy
from .out_of_memory import releases_memory
from .pipeline import Pipeline
from .progress import ProgressFn, report
from .validation import NonFiniteError, check_finite_tensor, check_number, check_seed

DEFAULT_TRAINABLE = ("attn1.to_q", "attn2.to_q", "attn_temp")


@dataclasses.dataclass
class TuneConfig:
    steps: int = 500
    lr: float = 3e-5
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    seed: int = 33
    trainable_modules: Sequence[str] = DEFAULT_TRAINABLE
    #: "auto" = the frozen weights' half type if they are half (no copy), else fp32 on CPU and
    #: bf16 (else fp16) autocast on CUDA; trainable weights always get fp32 masters under autocast
    precision: str = "auto"
    #: None = auto: on for CUDA (memory is what limits frames there), off on CPU, where it costs
    #: 22-46% step time (benchmarks/RESULTS.md) and memory is plentiful
    gradient_checkpointing: Optional[bool] = None


@dataclasses.dataclass
class TuneResult:
    pipeline: Pipeline
    losses: list[float]
    trainable_params: int


def trainable_names(unet: nn.Module, modules: Sequence[str]) -> list[str]:
    """Parameter names under modules whose qualified name ends with one of ``modules`` (the reference rule)."""
    suffixes = tuple(modules)
    names = []
    for mod_name, mod in unet.named_modules():
        if mod_name.endswith(suffixes):
            names += [f"{mod_name}.{p}" if mod_name else p for p, _ in mod.named_parameters()]  # "" is the root
    return sorted(set(names))


def half_dtype(device: torch.device) -> torch.dtype:
    """The half precision frozen weights are loaded in and tuning autocasts to: bf16 where the GPU
    supports it, else fp16. Loaders and tuning must agree, or tuning copies the whole frozen UNet
    (834.7M parameters, 1.55 GiB, for SD1.5) into the other half type."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def resolve_precision(
    precision: str, device: torch.device, weights: Optional[torch.dtype] = None
) -> Optional[torch.dtype]:
    """The autocast dtype, or None for plain fp32.

    "auto" follows frozen ``weights`` already in half precision (no copy of them is made), else it is
    fp32 on CPU and :func:`half_dtype` on CUDA; an explicit "bf16"/"fp16" is honoured on any device
    (CPU autocast supports both), which is also how the mixed-precision path is tested.
    """
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "auto" and weights in (torch.float16, torch.bfloat16):
        return weights
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return half_dtype(device)
    return torch.float16 if precision == "fp16" else torch.bfloat16


def _cast_frozen(module: nn.Module, dtype: torch.dtype, keep: set[int]) -> None:
    """Swap frozen parameters for ``dtype`` copies without touching the (shared) originals."""
    for m in module.modules():
        for name, p in m._parameters.items():
            if p is not None and id(p) not in keep and p.is_floating_point() and p.dtype != dtype:
                m._parameters[name] = nn.Parameter(p.detach().to(dtype), requires_grad=False)


@releases_memory("tune")
def tune(
    pipe: Pipeline,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    config: TuneConfig = TuneConfig(),
    callback: Optional[ProgressFn] = None,
    prompt: str = "",
) -> TuneResult:
    """Tune ``pipe`` (inflated) on one clip's latents ``[1, C, F, h, w]`` and its caption embedding.

    ``prompt`` (the caption's text) is only recorded in the result's ``info`` for saving.
    """
    if not isinstance(pipe.unet, VideoUNet):
        raise ValueError("tune() needs an inflated pipeline: call tav.inflation.inflate(pipe) first")
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise ValueError(f"expected one clip's latents [1, C, frames, h, w], got {tuple(latents.shape)}")
    if config.steps < 1:
        raise ValueError("steps must be >= 1")
    check_number("learning rate", config.lr, 0, 1, hint="the paper uses 3e-5")
    check_number("weight decay", config.weight_decay, 0, 10)
    check_number("max grad norm", config.max_grad_norm, 0)
    check_seed("seed", config.seed)
    check_finite_tensor(latents, "the clip's latents", hint="check the input frames")
    check_finite_tensor(prompt_embeds, "the prompt embedding")
    with torch.inference_mode(False), torch.enable_grad():
        result = _tune(pipe, latents, prompt_embeds, config, callback)
    k = pipe.latent_factor
    _, _, f, h, w = latents.shape
    info = {
        "prompt": prompt,
        "frames": f,
        "height": h * k,
        "width": w * k,
        "trainable_modules": list(config.trainable_modules),
    }
    result.pipeline = result.pipeline.replace(info=info)
    return result


def _tune(
    pipe: Pipeline,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    config: TuneConfig,
    callback: Optional[ProgressFn],
) -> TuneResult:
    names = trainable_names(pipe.unet, config.trainable_modules)
    if not names:
        raise ValueError(
            f"trainable_modules {list(config.trainable_modules)} match no module of this UNet; "
            f"use suffixes of module names such as {list(DEFAULT_TRAINABLE)}"
        )
    params = dict(pipe.unet.named_parameters())
    unet = share_weights_copy(pipe.unet, [params[n] for n in names], copy_inference=True)
    device = next(unet.parameters()).device
    frozen = next((p.dtype for n, p in unet.named_parameters() if n not in set(names)), None)
    amp = resolve_precision(config.precision, device, frozen)
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = device.type == "cuda"
    unet.requires_grad_(False)
    trainable = [p for n, p in unet.named_parameters() if n in set(names)]
    if amp is not None:  # frozen weights in half precision, trained ones in fp32 master copies
        _cast_frozen(unet, amp, {id(p) for p in trainable})
        for p in trainable:
            p.data = p.data.float()
    for p in trainable:
        p.requires_grad_(True)
    if checkpointing:
        unet.unet.enable_gradient_checkpointing()
    unet.train()

    opt = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    ac = alphas_cumprod(pipe.scheduler_config).float().to(device)
    n_train = ac.shape[0]
    x0 = latents.detach().clone().float().to(device)
    cond = prompt_embeds[:1].detach().clone().to(device)
    gen = torch.Generator("cpu").manual_seed(config.seed)
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    losses: list[float] = []
    try:
        for step in range(config.steps):
            noise = torch.randn(x0.shape, generator=gen).to(device)
            t = int(torch.randint(0, n_train, (1,), generator=gen))
            a = ac[t]
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
            target = noise if pipe.prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
            with autocast:
                pred = unet(noisy, torch.tensor([t], device=device), cond)
            loss = F.mse_loss(pred.float(), target.float())
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteError(
                    f"tuning diverged: the loss became {value} at step {step + 1} of {config.steps}; lower the "
                    f"learning rate (now {config.lr:g}), use fp32 precision, or check the clip and the model"
                )
            losses.append(value)
            report(callback, step + 1, config.steps)
    finally:
        if checkpointing:
            unet.unet.disable_gradient_checkpointing()
        unet.eval().requires_grad_(False)
    if amp is not None:  # sample with the trained weights at the frozen weights' precision
        for p in trainable:
            p.data = p.data.to(amp)
    return TuneResult(pipe.replace(unet=unet), losses, sum(p.numel() for p in trainable))
