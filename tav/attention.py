"""Sparse-causal (ST-Attn) and temporal (T-Attn) attention as diffusers attention processors.

Frames are folded into the batch, ``(b*f, tokens, dim)``. Both processors need the frame count,
which they read from a shared :class:`FrameContext` that :class:`tav.inflation.VideoUNet` sets on
every forward. Everything runs on ``scaled_dot_product_attention``: no score matrix is ever built.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from diffusers.models.attention_processor import Attention
from einops import rearrange

from .attention_kernels import attention


@dataclasses.dataclass
class SharedFrame:
    """What every window of a long clip shares in one denoising step (see :mod:`tav.windows`).

    The window holding the clip's frame 0 runs first with ``record`` on: each ``attn1`` stores that
    frame's keys/values (``kv``) and each video GroupNorm its statistics (``stats``). Later windows
    of the same step read them, so the anchor is computed once per step, never re-run per window.
    """

    #: keep the clip's frame 0 as the sparse-causal anchor of every window
    anchor: bool = True
    #: every window normalises with the first window's GroupNorm statistics
    norm: bool = False
    record: bool = True
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=dict)
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FrameContext:
    """Frames per video in the current forward pass; shared by every inflated module of one UNet."""

    frames: int = 1
    #: set only while a windowed step runs (None: the reference behaviour, one pass over the clip)
    shared: Optional[SharedFrame] = None


def sparse_causal_index(frames: int, device: torch.device | None = None) -> torch.Tensor:
    """Index of the 'previous' frame per frame, exactly as the reference: ``[0, 0, 1, ..., f-2]``.

    Frame 0 attends to ``[f0, f0]``, frame 1 to ``[f0, f0]``, frame i >= 2 to ``[f0, f(i-1)]``: the
    current frame is not among its own keys (the reference's choice; see tav_reference.md).
    """
    former = torch.arange(frames, device=device) - 1
    former[0] = 0
    return former


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


#: which frames each frame i attends to in ``attn1`` (its keys/values), per attention mode
KEY_FRAMES: dict[str, str] = {
    "sparse_causal": "frame 0 and frame i-1 (the reference)",
    "sparse_causal_self": "frame 0, frame i-1 and frame i itself",
    "frame": "frame i only (no cross-frame attention: the ablation)",
}
ATTENTION_MODES = tuple(KEY_FRAMES)


def key_frame_index(mode: str, frames: int, device: torch.device | None = None) -> torch.Tensor:
    """``[frames, k]``: the frames whose tokens frame i attends to, in order (see :data:`KEY_FRAMES`).

    Rows are padded by repetition (frame 0 of ``sparse_causal`` gets ``[0, 0]``), so every frame
    has ``k`` key frames and one batched attention serves them all.
    """
    if mode not in KEY_FRAMES:
        raise ValueError(f"unknown attention mode {mode!r}: use one of {', '.join(KEY_FRAMES)}")
    own = torch.arange(frames, device=device)
    first = torch.zeros_like(own)
    former = sparse_causal_index(frames, device)
    cols = {"sparse_causal": (first, former), "sparse_causal_self": (first, former, own), "frame": (own,)}[mode]
    return torch.stack(cols, dim=1)


def gather_key_frames(t: torch.Tensor, index: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
    """Keys/values per frame: ``(b*f, n, d) -> (b*f, k*n, d)``, the tokens of ``index[i]``'s frames.

    ``source`` (``[b, F, n, d]``, default: ``t`` itself) is what the indices point into.
    """
    src = rearrange(t, "(b f) n d -> b f n d", f=index.shape[0]) if source is None else source
    return rearrange(src[:, index], "b f k n d -> (b f) (k n) d")


def repeat_bias(index: torch.Tensor, tokens: int, batch: int) -> torch.Tensor | None:
    """Additive attention bias ``-log(m)`` for a key frame listed ``m`` times in its row.

    A frame repeated as padding then weighs exactly as one copy: ``m * exp(s - log m) = exp(s)``.
    None when every row repeats its frames equally (e.g. the reference's ``[0, 0]``), where
    repetition cannot change the softmax.
    """
    counts = (index[:, :, None] == index[:, None, :]).sum(-1)
    if bool((counts == counts[:, :1]).all()):
        return None
    bias = (-counts.double().log()).repeat_interleave(tokens, dim=1)
    return bias.repeat(batch, 1)[:, None, None, :]


KeysValues = tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]


def key_frames_of_clip(key: torch.Tensor, value: torch.Tensor, frames: int, mode: str) -> KeysValues:
    """Keys, values and additive bias (:func:`repeat_bias`, or None) of every frame of ``(b*f, n, d)``
    over its key frames. Shared by the diffusers processor and ComfyUI's attn1 replacement (the
    native path)."""
    index = key_frame_index(mode, frames, key.device)
    bias = repeat_bias(index, key.shape[1], key.shape[0] // frames)
    return gather_key_frames(key, index), gather_key_frames(value, index), bias


def first_frame(t: torch.Tensor, frames: int) -> torch.Tensor:
    """Frame 0's tokens ``(b, n, d)`` of ``(b*f, n, d)``: the anchor a windowed step records, as a copy
    (a view would keep the whole window's keys/values alive for the rest of the step)."""
    return rearrange(t, "(b f) n d -> b f n d", f=frames)[:, 0].clone()


def anchored_key_frames(
    t: torch.Tensor, anchor: torch.Tensor, frames: int, mode: str = "sparse_causal"
) -> torch.Tensor:
    """Keys/values of a later window, whose frames are frames 1.. of ``[clip frame 0] + window``:
    ``anchor`` (``(b, n, d)``) is the clip's frame 0, recorded by the first window. With the reference's
    keys, window frame j gets ``[anchor, window frame j-1]`` and the window's first frame ``[anchor,
    anchor]``, as the reference's frame 1 does. Shared by the diffusers processor and the native path."""
    t = rearrange(t, "(b f) n d -> b f n d", f=frames)
    if anchor.shape[0] != t.shape[0]:
        raise RuntimeError(f"windowed step: anchor batch {anchor.shape[0]} != window batch {t.shape[0]}")
    index = key_frame_index(mode, frames + 1, t.device)[1:]  # rows of the window's frames
    return gather_key_frames(t, index, source=torch.cat([anchor[:, None], t], dim=1))


def key_frames_of_window(
    key: torch.Tensor, value: torch.Tensor, anchor: tuple[torch.Tensor, torch.Tensor], frames: int, mode: str
) -> KeysValues:
    """:func:`key_frames_of_clip` for a later window anchored on the clip's frame 0 (``anchor``: its
    keys and values, see :func:`anchored_key_frames`)."""
    index = key_frame_index(mode, frames + 1, key.device)[1:]
    bias = repeat_bias(index, key.shape[1], key.shape[0] // frames)
    k0, v0 = anchor
    return anchored_key_frames(key, k0, frames, mode), anchored_key_frames(value, v0, frames, mode), bias


class SparseCausalAttnProcessor:
    """``attn1`` processor: query of frame i, keys/values of its key frames concatenated on tokens.

    ``mode`` picks the key frames (:data:`KEY_FRAMES`): "sparse_causal" is the reference (frames
    0 and i-1); "sparse_causal_self" adds frame i itself, as later methods do, so a frame's own
    content is never out of reach; "frame" is the ablation "w/o sparse-causal attention": plain
    per-frame self-attention (as the 2-D model does).
    """

    def __init__(self, ctx: FrameContext, mode: str = "sparse_causal") -> None:
        if mode not in KEY_FRAMES:
            raise ValueError(f"unknown attention mode {mode!r}: use one of {', '.join(KEY_FRAMES)}")
        self.ctx = ctx
        self.mode = mode

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("sparse-causal attention is self-attention: it takes no context or mask")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            bf, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(bf, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = _heads(attn.to_q(hidden_states), attn.heads)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        f = self.ctx.frames
        shared = self.ctx.shared
        bias = None
        if self.mode != "frame" and shared is not None and shared.anchor:
            key, value, bias = self._shared_anchor(attn, key, value, f, shared)
        elif self.mode != "frame" and f > 1:
            key, value, bias = key_frames_of_clip(key, value, f, self.mode)
        key, value = _heads(key, attn.heads), _heads(value, attn.heads)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if bias is not None:
            bias = bias.to(query.dtype)
        out = attention(query, key, value, attn.scale, bias)
        out = _merge_heads(out).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(bf, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _shared_anchor(
        self, attn: Attention, key: torch.Tensor, value: torch.Tensor, frames: int, shared: SharedFrame
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Record the clip's frame-0 keys/values, or attend to them from a later window.

        A later window is run as the reference model on ``[frame 0] + window`` for attention,
        without recomputing frame 0: with "sparse_causal", frame j gets ``[anchor, window frame
        j-1]`` and the window's first frame ``[anchor, anchor]`` (its predecessor lies outside the
        window, so it is treated as the reference treats the clip's frame 1).
        """
        if shared.record:
            shared.kv[id(attn)] = (first_frame(key, frames), first_frame(value, frames))
            if frames == 1:
                return key, value, None
            return key_frames_of_clip(key, value, frames, self.mode)
        if id(attn) not in shared.kv:
            raise RuntimeError("windowed step: the window holding frame 0 must run first in every step")
        return key_frames_of_window(key, value, shared.kv[id(attn)], frames, self.mode)


class TemporalAttnProcessor:
    """``attn_temp`` processor: self-attention across the f frames at each spatial position.

    No positional encoding (as the reference), so it is permutation-equivariant over frames.
    """

    def __init__(self, ctx: FrameContext) -> None:
        self.ctx = ctx

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        f, n = self.ctx.frames, hidden_states.shape[1]
        x = rearrange(hidden_states, "(b f) n d -> (b n) f d", f=f)
        q, k, v = (_heads(proj(x), attn.heads) for proj in (attn.to_q, attn.to_k, attn.to_v))
        out = attention(q, k, v, attn.scale)
        out = attn.to_out[1](attn.to_out[0](_merge_heads(out).to(q.dtype)))
        return rearrange(out, "(b n) f d -> (b f) n d", n=n)
