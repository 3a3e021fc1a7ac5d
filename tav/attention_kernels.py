"""Attention without the math SDPA kernel on CUDA: a fused kernel, or query-chunked attention.

``scaled_dot_product_attention`` silently falls back to its math kernel when no fused kernel takes the
inputs, and the math kernel materialises every head's score matrix: 8 x 4096 x 8192 x 2 bytes per
frame for the sparse-causal attention at 512x512, what breaks a 12 GB card. On CUDA the frame
attentions therefore run with the math kernel excluded; if no fused kernel accepts the call, they
fall back to :func:`chunked_attention`, which holds the scores of a block of queries at a time, also
in training (each chunk is recomputed in backward instead of keeping its scores).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

#: the kernels that never build the score matrix
FUSED = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION)
#: how torch (CUDA, CPU) says that no allowed kernel takes the inputs
NO_KERNEL = ("No available kernel", "No viable backend")
#: bytes one chunk of :func:`chunked_attention` may hold at its peak (forward and backward)
SCORE_BUDGET = 512 * 2**20
#: fp32 score-sized tensors a chunk holds at its peak: the math kernel computes half-precision scores
#: in fp32, and backward holds scores, probabilities and their gradients (measured: at most 6, in
#: benchmarks/bench_chunked_attention.py)
SCORE_COPIES = 6


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """SDPA of ``[B, H, L, D]`` tensors (``mask``: an additive bias broadcast to ``[B, H, L, S]``); on
    CUDA never the math kernel."""
    if q.device.type != "cuda":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return fused_or_chunked(q, k, v, scale, FUSED, mask)


def fused_or_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    backends: Sequence[SDPBackend],
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SDPA restricted to ``backends``; :func:`chunked_attention` where none of them takes the inputs."""
    try:
        with sdpa_kernel(list(backends)):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    except RuntimeError as e:  # raised by the kernel choice, before any work
        if not any(m in str(e) for m in NO_KERNEL):
            raise
    return chunked_attention(q, k, v, scale, mask=mask)


def chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    budget: int = SCORE_BUDGET,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact attention over blocks of queries, each block's peak within about ``budget`` bytes."""
    b, h, n, _ = q.shape
    chunk = max(1, budget // (b * h * k.shape[-2] * 4 * SCORE_COPIES))
    if chunk >= n:
        return _math(q, k, v, scale, mask)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outs = []
    for i in range(0, n, chunk):
        m = mask[..., i : i + chunk, :] if mask is not None and mask.shape[-2] == n else mask
        args = (q[:, :, i : i + chunk], k, v, scale, m)
        outs.append(checkpoint(_math, *args, use_reentrant=False) if grad else _math(*args))
    return torch.cat(outs, dim=2)


def _math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
