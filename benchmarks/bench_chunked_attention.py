"""Peak memory of the CUDA attention fallback (tav.attention_kernels.chunked_attention) vs the math kernel.

The sparse-causal attention of SD1.x/SD2.x at 512x512 and 24 frames (queries: one frame's tokens;
keys: frame 0's and the previous frame's), in bf16, forward + backward as in tuning. Measured with
``tav.memory_probe.LiveBytes`` (the planner's live-tensor bookkeeping, validated on real CPU runs)
on fake tensors, so the full sizes run in seconds without the memory. Figures: the peak over the
inputs (q, k, v and the upstream gradient), in MiB; the bound is the chunk budget, the output and
three times the inputs' bytes (the gradients of q, k and v, accumulated over the chunks: the sum so
far, one chunk's and the new sum). The math kernel's peak grows with tokens x keys; this bound does not. A small real run checks that chunked and math agree.

    .venv/bin/python benchmarks/bench_chunked_attention.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tav.attention_kernels import SCORE_BUDGET, chunked_attention  # noqa: E402
from tav.memory_probe import LiveBytes  # noqa: E402

FRAMES = 24
#: (model, heads, tokens per frame, head dim) of each attention level at 512x512 (64x64 latents)
LEVELS = [
    ("SD1.x", 8, 4096, 40),
    ("SD1.x", 8, 1024, 80),
    ("SD1.x", 8, 256, 160),
    ("SD2.x", 5, 4096, 64),
    ("SD2.x", 10, 1024, 64),
    ("SD2.x", 20, 256, 64),
]


def math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)


def peak_over_inputs(fn, heads: int, tokens: int, dim: int) -> int:  # noqa: ANN001 - an attention function
    """Forward + backward peak of ``fn`` over its inputs, on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), LiveBytes(fake=True) as live:
        q = torch.empty(FRAMES, heads, tokens, dim, dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.empty(FRAMES, heads, 2 * tokens, dim, dtype=torch.bfloat16, requires_grad=True) for _ in "kv")
        grad = torch.empty(FRAMES, heads, tokens, dim, dtype=torch.bfloat16)
        base = live.live
        live.reset_peak()
        out = fn(q, k, v, dim**-0.5)
        torch.autograd.backward(out, grad)
        return live.peak - base


def agreement() -> float:
    """max |chunked - math| / max |math| on a small real case, forward, several chunks."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 40, generator=g) for n in (96, 192, 192))
    ref = math(q, k, v, 40**-0.5)
    out = chunked_attention(q, k, v, 40**-0.5, budget=16 * 2 * 4 * 192 * 4 * 6)
    return float((out - ref).abs().max() / ref.abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    mib = 2**20
    for model, heads, tokens, dim in LEVELS:
        tensor = FRAMES * heads * tokens * dim * 2  # one bf16 query-sized tensor (keys are twice as long)
        row = {
            "model": model,
            "heads": heads,
            "tokens": tokens,
            "head_dim": dim,
            "math_peak_mib": peak_over_inputs(math, heads, tokens, dim) / mib,
            "chunked_peak_mib": peak_over_inputs(chunked_attention, heads, tokens, dim) / mib,
            "bound_mib": (SCORE_BUDGET + tensor + 3 * 5 * tensor) / mib,
        }
        row["math_over_chunked"] = row["math_peak_mib"] / row["chunked_peak_mib"]
        rows.append(row)
        print(
            f"{model} heads={heads:2} tokens={tokens:4} head_dim={dim:3} | peak over inputs MiB: math "
            f"{row['math_peak_mib']:8.0f} chunked {row['chunked_peak_mib']:6.0f} (bound {row['bound_mib']:.0f}) "
            f"| math/chunked {row['math_over_chunked']:.1f}x",
            flush=True,
        )
    result = {
        "frames": FRAMES,
        "score_budget_mib": SCORE_BUDGET / mib,
        "rows": rows,
        "agreement": agreement(),
        "within_bound": all(r["chunked_peak_mib"] <= r["bound_mib"] for r in rows),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
