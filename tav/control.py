"""ControlNet for Tune-A-Video sampling: one hint image per frame (pose, depth, edges of the clip).

The paper's pose-guided demo and several user requests ask for structure control. Since frames
are folded into the batch, a stock 2-D ``ControlNetModel`` runs per frame and its residuals feed
the inflated UNet unchanged, exactly as diffusers' ControlNet pipeline feeds a 2-D UNet.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from einops import rearrange, repeat
from torch import nn

from .validation import InputError


def schedule_sigma(alphas_cumprod: torch.Tensor, t: float) -> float:
    """The noise level sigma = sqrt((1 - a) / a) of a (fractional) timestep ``t``, linear in log sigma
    between whole timesteps: the continuous schedule ComfyUI's discrete models sample on."""
    log_sigma = 0.5 * ((1 - alphas_cumprod.double()) / alphas_cumprod.double()).log()
    t = min(max(float(t), 0.0), len(log_sigma) - 1.0)
    lo, w = math.floor(t), t - math.floor(t)
    return math.exp((1 - w) * float(log_sigma[lo]) + w * float(log_sigma[min(lo + 1, len(log_sigma) - 1)]))


def percent_sigma(alphas_cumprod: torch.Tensor, percent: float) -> float:
    """The sigma where a start/end percent lies. ComfyUI's meaning: a percent of the model's noise
    schedule (0 = pure noise, inf; 1 = clean, 0), not of the sampling steps, so that a percent means the
    same noise level whatever the step count and the stock Apply ControlNet agrees with Sample."""
    if percent <= 0:
        return math.inf
    if percent >= 1:
        return 0.0
    return schedule_sigma(alphas_cumprod, (1 - percent) * (len(alphas_cumprod) - 1))


@dataclasses.dataclass
class Control:
    """A ControlNet, its per-frame hint ``[F, H, W, 3]`` in 0..1, and when it acts.

    ``start``/``end`` are ComfyUI's start/end percent: fractions of the noise schedule (see
    :func:`percent_sigma`).
    """

    model: ControlNetModel
    hint: torch.Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def active(self, t: int, alphas_cumprod: torch.Tensor) -> bool:
        """Whether it acts on the step at timestep ``t``: while that step's sigma lies between the sigmas
        of ``end`` and ``start`` (both ends included), as stock ComfyUI decides."""
        if self.scale == 0:
            return False
        sigma = schedule_sigma(alphas_cumprod, t)
        return percent_sigma(alphas_cumprod, self.end) <= sigma <= percent_sigma(alphas_cumprod, self.start)


def fit_hint(hint: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Hints ``[N, C, H, W]`` at ``height x width``: centre-cropped to that aspect ratio, then resized
    nearest-exact. That is what stock Apply ControlNet does to a hint of another size, so the pack's
    route and ComfyUI's see the same pixels (a plain stretch would distort, a smooth filter would blur
    edge and pose maps)."""
    h0, w0 = hint.shape[-2:]
    if (h0, w0) == (height, width):
        return hint
    aspect, aspect0 = width / height, w0 / h0  # the same float expressions as the stock crop: same rounding
    if aspect0 > aspect:  # wider than the frame: trim left and right
        x = round((w0 - w0 * (aspect / aspect0)) / 2)
        hint = hint[..., x : w0 - x]
    elif aspect0 < aspect:  # taller: trim top and bottom
        y = round((h0 - h0 * (aspect0 / aspect)) / 2)
        hint = hint[..., y : h0 - y, :]
    return F.interpolate(hint.float(), size=(height, width), mode="nearest-exact")


def check_hint_frames(control: Control, frames: int) -> None:
    """Refuse a hint whose frame count is not the video's, before sampling: repeating 2 hints over 4
    frames would steer frames 3-4 with the wrong pose/edges, not what was asked."""
    have = control.hint.shape[0]
    if have != frames:
        raise InputError(
            f"the ControlNet hint has {have} frame(s) but the video has {frames}: give one hint image per frame "
            f"(e.g. load the hint video with {frames} frames, the same start and stride as the clip)"
        )


def residuals(control: Control, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> dict[str, Any]:
    """UNet kwargs with the ControlNet's residuals for folded latents ``x`` ``[B*F, C, h, w]``.

    ``embeds`` are per folded sample; the hint is repeated over the B videos (cond and uncond).
    """
    frames = control.hint.shape[0]
    if x.shape[0] % frames:
        raise ValueError(f"the ControlNet hint has {frames} frames but the video has a different count")
    param = next(control.model.parameters())
    hint = repeat(control.hint[..., :3], "f h w c -> (b f) c h w", b=x.shape[0] // frames)
    hint = fit_hint(hint, x.shape[-2] * 8, x.shape[-1] * 8)  # ControlNet hints live at 8x the latent size
    down, mid = control.model(
        x.to(param.dtype),
        t,
        embeds.to(param.dtype),
        controlnet_cond=hint.to(param.device, param.dtype),
        conditioning_scale=control.scale,
        return_dict=False,
    )
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def fold(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b c f h w -> (b f) c h w")


def controlnet_from_ldm(state_dict: Mapping[str, torch.Tensor], unet: nn.Module) -> ControlNetModel:
    """A diffusers ControlNet from an original-layout one (``input_hint_block``, ``zero_convs``, ...).

    That is the layout of ControlNet ``.safetensors`` files and of ComfyUI's loaded CONTROL_NET.
    ``unet`` (2-D or inflated) supplies the architecture the ControlNet mirrors.
    """
    unet2d = getattr(unet, "unet", unet)
    sd = {k.removeprefix("control_model."): v for k, v in state_dict.items()}
    if "input_hint_block.0.weight" not in sd:
        raise ValueError("not a ControlNet state dict: it has no input_hint_block (T2I-Adapters are not supported)")
    hint_convs = sorted(
        (int(k.split(".")[1]), v) for k, v in sd.items() if k.startswith("input_hint_block.") and k.endswith(".weight")
    )
    # conv_in, then (conv, stride-2 conv) per stage, then conv_out: stage widths sit at even positions
    embed_channels = tuple(v.shape[0] for _, v in hint_convs[0:-1:2])
    with torch.device("meta"):
        model = ControlNetModel.from_unet(
            unet2d,
            load_weights_from_unet=False,
            conditioning_channels=int(hint_convs[0][1].shape[1]),
            conditioning_embedding_out_channels=embed_channels,
        )
    converted = convert_controlnet_checkpoint(dict(sd), {"layers_per_block": unet2d.config.layers_per_block})
    converted = {k: v for k, v in converted.items() if v is not None}
    _check_base(sd, model, converted, unet2d.config)
    missing, unexpected = model.load_state_dict(converted, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(
            "this ControlNet does not match the model's architecture (is it for SD 1.x vs 2.x?): "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    p = next(unet2d.parameters())
    return (
        nn.Module.to(model, p.device, p.dtype).eval().requires_grad_(False)
    )  # nn.Module.to: no diffusers dtype warning


#: the base model families by the width of the text embeddings their cross-attention takes
FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


def _base(context: int, channels: int) -> str:
    family = FAMILIES.get(context, "another base")
    return f"{family} ({context}-wide text embeddings, {channels} channels in its first block)"


def _check_base(sd: Mapping[str, torch.Tensor], model: ControlNetModel, converted: Mapping, config: Any) -> None:
    """Refuse a ControlNet made for another base model than the pipeline's, naming both, before its
    weights are assigned (torch would say only "size mismatch for ..." of some tensor)."""
    shapes = model.state_dict()
    if all(k not in shapes or shapes[k].shape == v.shape for k, v in converted.items()):
        return
    attn = next((v for k, v in sd.items() if k.endswith("attn2.to_k.weight")), None)
    first = sd.get("input_blocks.0.0.weight")
    if attn is None or first is None:
        theirs = "an unknown base (the file has no cross-attention or first-block weights to tell)"
    else:
        theirs = _base(int(attn.shape[1]), int(first.shape[0]))
    ours = _base(int(config.cross_attention_dim), int(config.block_out_channels[0]))
    raise InputError(
        f"this ControlNet was made for {theirs}, but the pipeline's base model is {ours}: "
        "load a ControlNet made for this base model"
    )
