"""Inflation: turn a stock ``UNet2DConditionModel`` into Tune-A-Video's video UNet by module surgery.

Frames are folded into the batch, so the reference's "pseudo-3-D" convolutions are the stock 2-D
ones. What changes (all keyed exactly as the reference, so its checkpoints load):

- every ``attn1`` gets :class:`~tav.attention.SparseCausalAttnProcessor`;
- every ``BasicTransformerBlock`` gains ``attn_temp`` + ``norm_temp`` children and a forward hook
  that adds ``attn_temp(norm_temp(x))`` after the feed-forward;
- resnet GroupNorms and ``conv_norm_out`` pool statistics over all frames of a video (the reference
  normalises the 5-D tensor), unless ``norm="frame"``.

:class:`VideoUNet` takes and returns ``[B, C, F, h, w]``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from einops import rearrange
from torch import nn

from .attention import ATTENTION_MODES, FrameContext, SharedFrame, SparseCausalAttnProcessor, TemporalAttnProcessor
from .pipeline import Pipeline

TEMPORAL_KEYS = ("attn_temp.", "norm_temp.")
#: GroupNorm statistics: "video" pools over all frames (reference), "frame" over each frame
NORMS = ("video", "frame")


class VideoGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics pool over every frame of a video, as the reference's 5-D norm."""

    def __init__(self, source: nn.GroupNorm, ctx: FrameContext) -> None:
        nn.Module.__init__(self)
        self.num_groups, self.num_channels = source.num_groups, source.num_channels
        self.eps, self.affine = source.eps, source.affine
        self.weight, self.bias = source.weight, source.bias  # shared, same keys
        self.ctx = ctx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.ctx.frames
        shared = self.ctx.shared
        if shared is not None and shared.norm:
            return self._shared_stats(x, f, shared)
        if f == 1:
            return super().forward(x)
        x5 = rearrange(x, "(b f) c h w -> b c f h w", f=f)
        y = F.group_norm(x5, self.num_groups, self.weight, self.bias, self.eps)
        return rearrange(y, "b c f h w -> (b f) c h w")

    def _shared_stats(self, x: torch.Tensor, f: int, shared: SharedFrame) -> torch.Tensor:
        """Windowed steps with ``norm="first_window"``: pool over the first window, reuse its statistics."""
        x5 = rearrange(x, "(b f) (g c) h w -> b g (c f h w)", f=f, g=self.num_groups)
        if shared.record:  # the first window normalises exactly as without windows
            var, mean = torch.var_mean(x5.float(), dim=-1, unbiased=False, keepdim=True)
            shared.stats[id(self)] = (mean, var)
            y = F.group_norm(
                rearrange(x, "(b f) c h w -> b c f h w", f=f), self.num_groups, self.weight, self.bias, self.eps
            )
            return rearrange(y, "b c f h w -> (b f) c h w")
        if id(self) not in shared.stats:
            raise RuntimeError("windowed step: the window holding frame 0 must run first in every step")
        mean, var = shared.stats[id(self)]
        if mean.shape[0] != x5.shape[0]:
            raise RuntimeError(f"windowed step: statistics batch {mean.shape[0]} != window batch {x5.shape[0]}")
        y = ((x5.float() - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        y = rearrange(y, "b g (c f h w) -> (b f) (g c) h w", f=f, h=x.shape[-2], w=x.shape[-1])
        if self.affine:
            y = y * self.weight[:, None, None] + self.bias[:, None, None]
        return y


def _temporal_residual(block: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on a transformer block: ``x + attn_temp(norm_temp(x))`` after the feed-forward."""
    return output + block.attn_temp(block.norm_temp(output))


class VideoUNet(nn.Module):
    """An inflated UNet: ``[B, C, F, h, w]`` in and out; ``.unet`` holds reference-keyed weights."""

    def __init__(self, unet: nn.Module, ctx: FrameContext, *, norm: str, attention: str) -> None:
        super().__init__()
        self.unet = unet
        self.ctx = ctx
        self.norm = norm
        self.attention = attention

    @property
    def config(self):  # noqa: ANN201 - diffusers FrozenDict
        return self.unet.config

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        **kwargs: object,
    ) -> torch.Tensor:
        if sample.ndim != 5:
            raise ValueError(f"VideoUNet expects [batch, channels, frames, h, w], got {tuple(sample.shape)}")
        b, f = sample.shape[0], sample.shape[2]
        self.ctx.frames = f
        x = rearrange(sample, "b c f h w -> (b f) c h w")
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(b)  # a scalar, [1] or [b]
        ehs = encoder_hidden_states.repeat_interleave(f, dim=0)
        out = self.unet(x, t.repeat_interleave(f), ehs, return_dict=False, **kwargs)[0]
        return rearrange(out, "(b f) c h w -> b c f h w", f=f)


def transformer_blocks(unet: nn.Module) -> list[BasicTransformerBlock]:
    return [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]


def share_weights_copy(
    module: nn.Module, own: Iterable[torch.Tensor] = (), *, copy_inference: bool = False
) -> nn.Module:
    """A structural copy of ``module`` that shares every parameter/buffer except those in ``own``.

    ``own`` tensors get fresh copies. This is how a node returns a new model without mutating its
    input (ComfyUI caches outputs) and without duplicating hundreds of MB of frozen weights.
    With ``copy_inference``, inference tensors (what a loader running under ComfyUI's
    ``inference_mode`` made) are copied too, because autograd cannot save them for backward.
    """
    owned = {id(t) for t in own}
    memo: dict[int, object] = {}
    with torch.inference_mode(False):
        for t in list(module.parameters()) + list(module.buffers()):
            if id(t) in owned or (copy_inference and t.is_inference()):
                memo[id(t)] = _fresh_copy(t)
            else:
                memo[id(t)] = t
        return copy.deepcopy(module, memo)


def _fresh_copy(t: torch.Tensor) -> torch.Tensor:
    """A detached copy of a parameter or buffer (by clone, not deepcopy: fake tensors, which the memory
    planner runs this on, cannot be deep-copied within their mode)."""
    c = t.detach().clone()
    return nn.Parameter(c, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else c


def _add_temporal(block: BasicTransformerBlock, ctx: FrameContext, zero_bias: bool) -> None:
    a1 = block.attn1
    dim = a1.query_dim
    param = a1.to_q.weight
    attn = Attention(
        query_dim=dim,
        heads=a1.heads,
        dim_head=a1.inner_dim // a1.heads,
        bias=a1.to_q.bias is not None,
        upcast_attention=a1.upcast_attention,
        processor=TemporalAttnProcessor(ctx),
    )
    nn.init.zeros_(attn.to_out[0].weight)
    if zero_bias:
        nn.init.zeros_(attn.to_out[0].bias)
    block.attn_temp = _like(attn, param)
    block.norm_temp = _like(nn.LayerNorm(dim), param)
    block.register_forward_hook(_temporal_residual)


def _like(module: nn.Module, param: torch.Tensor) -> nn.Module:
    """``module`` on ``param``'s device and dtype; left as built when it already is (the memory
    planner builds on fake tensors, which ``Module.to`` cannot move)."""
    p = next(module.parameters())
    return module if (p.device, p.dtype) == (param.device, param.dtype) else module.to(param.device, param.dtype)


def inflate(
    pipe: Pipeline,
    *,
    norm: str = "video",
    attention: str = "sparse_causal",
    zero_temporal_bias: bool = False,
    seed: int = 0,
) -> Pipeline:
    """Return a new pipeline with a :class:`VideoUNet`; the input pipeline is left untouched.

    ``norm``: "video" (reference: GroupNorm over all frames) or "frame" (per-frame, what folding
    frames into the batch gives). ``attention``: "sparse_causal" (reference: keys of frames 0
    and i-1), "sparse_causal_self" (adds frame i itself) or "frame" (the ablation without
    cross-frame attention); see :data:`tav.attention.KEY_FRAMES`. ``zero_temporal_bias``: also zero ``attn_temp.to_out``'s
    bias so the inflated model starts as exactly the 2-D one (the reference keeps nn.Linear's
    random bias). ``seed`` makes the temporal layers' random init reproducible.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
    if is_inflated(pipe):
        raise ValueError("this pipeline is already inflated; inflate the 2-D pipeline it came from")
    unet = share_weights_copy(pipe.unet)
    ctx = FrameContext()
    blocks = transformer_blocks(unet)
    if not blocks:
        raise ValueError("the UNet has no transformer blocks: Tune-A-Video needs a cross-attention UNet")
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for block in blocks:
            if block.only_cross_attention:
                raise ValueError("UNets whose attn1 is cross-attention (only_cross_attention) are not supported")
            block.attn1.set_processor(SparseCausalAttnProcessor(ctx, attention))
            _add_temporal(block, ctx, zero_temporal_bias)
    if norm == "video":
        for resnet in (m for m in unet.modules() if isinstance(m, ResnetBlock2D)):
            for name in ("norm1", "norm2"):
                gn = getattr(resnet, name)
                if type(gn) is nn.GroupNorm:
                    setattr(resnet, name, VideoGroupNorm(gn, ctx))
        if type(getattr(unet, "conv_norm_out", None)) is nn.GroupNorm:
            unet.conv_norm_out = VideoGroupNorm(unet.conv_norm_out, ctx)
    return pipe.replace(unet=VideoUNet(unet, ctx, norm=norm, attention=attention))


def is_inflated(pipe: Pipeline) -> bool:
    return isinstance(pipe.unet, VideoUNet)


def temporal_state_dict(video_unet: VideoUNet) -> dict[str, torch.Tensor]:
    """The tensors inflation added, under the reference's keys."""
    return {k: v for k, v in video_unet.unet.state_dict().items() if any(s in k for s in TEMPORAL_KEYS)}


def load_reference_unet(pipe: Pipeline, state_dict: dict[str, torch.Tensor], **inflate_kwargs: object) -> Pipeline:
    """Inflate ``pipe`` and load a full official Tune-A-Video UNet state dict into it (strict).

    The official checkpoints are whole UNets in diffusers keys plus ``attn_temp``/``norm_temp``;
    ``pipe`` supplies the architecture (and the VAE/text encoder), the state dict every weight.
    """
    video = inflate(pipe, **inflate_kwargs) if not is_inflated(pipe) else pipe
    unet = share_weights_copy(video.unet, video.unet.parameters())
    missing, unexpected = unet.unet.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            "the checkpoint does not match this UNet's architecture: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    return video.replace(unet=unet)
