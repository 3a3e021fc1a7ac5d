"""Chunked attention (the CUDA fallback when no fused SDPA kernel takes a call) is exact attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from tav.attention_kernels import SCORE_COPIES, chunked_attention, fused_or_chunked


def qkv(head_dim: int, queries: int = 37, keys: int = 74, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, 3, queries, head_dim), (2, 3, keys, head_dim), (2, 3, keys, head_dim)]
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


@pytest.mark.parametrize("head_dim", [40, 64, 80, 160])  # SD1.x's and SD2.x's head sizes
def test_chunked_matches_full_attention_and_its_gradients(head_dim: int) -> None:
    q, k, v = qkv(head_dim)
    scale = head_dim**-0.5
    full = F.scaled_dot_product_attention(q, k, v, scale=scale)
    grads_full = torch.autograd.grad(full.square().sum(), (q, k, v))
    # a budget of 5 query rows' scores: 8 chunks, the last one short
    budget = 5 * 2 * 3 * 74 * 4 * SCORE_COPIES
    chunked = chunked_attention(q, k, v, scale, budget=budget)
    grads_chunked = torch.autograd.grad(chunked.square().sum(), (q, k, v))
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_chunked, grads_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_falls_back_to_chunks_when_no_allowed_kernel_takes_the_call() -> None:
    """On the CPU no fused kernel but flash exists: allowing only those forces the fallback path."""
    backends = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    q, k, v = (t.detach().float() for t in qkv(40))
    with pytest.raises(RuntimeError), sdpa_kernel(backends):
        F.scaled_dot_product_attention(q, k, v)
    out = fused_or_chunked(q, k, v, 40**-0.5, backends)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=40**-0.5))


def test_chunked_keeps_the_key_bias_of_sparse_causal_self() -> None:
    """The key-frame bias (``tav.attention.repeat_bias``: one value per key, broadcast over queries) is
    applied in every chunk, so the fallback of ``attention="sparse_causal_self"`` stays exact."""
    q, k, v = qkv(64)
    bias = torch.randn(2, 1, 1, 74, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    full = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.125)
    chunked = chunked_attention(q, k, v, 0.125, budget=5 * 2 * 3 * 74 * 4 * SCORE_COPIES, mask=bias)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)
    assert (chunked - chunked_attention(q, k, v, 0.125, budget=5 * 2 * 3 * 74 * 4 * SCORE_COPIES)).abs().max() > 1e-3
