#!/usr/bin/env python
"""Peak memory of one sampling step: an 8-frame clip vs a 64-frame clip in windows of 8.

Why: windows exist so that a clip of any length runs at one window's memory (issue 11). One
random SD-shaped inflated UNet (SD block types, layers_per_block 2, 8 heads, cross-attention dim
768, block channels ``--channels``) runs one DDIM sampling step with classifier-free guidance on:

- ``--frames`` (8) frames in one pass (the tuned length, the baseline);
- ``--long`` (64) frames in windows of ``--window`` (8), overlap ``--overlap`` (2), frame-0 anchor;
- optionally (``--one-pass-long``) the long clip in one pass, to show what windows save.

Each case runs in a fresh child process. On CUDA the peak is ``torch.cuda.max_memory_allocated``
over the step minus the allocation before it; on the CPU it is the RSS high-water mark over the
step minus the RSS before it (``_procmem.py``), with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed
tensors return to the kernel and RSS tracks live tensors. Nothing is asserted on time.

    .venv/bin/python benchmarks/bench_windows.py               # CPU, about a minute
    .venv/bin/python benchmarks/bench_windows.py --device cuda --channels 320,640,1280,1280 --latent 64
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _procmem

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _unet_config(channels: list[int], latent: int) -> dict:
    n = len(channels)
    return {
        "sample_size": latent,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        "block_out_channels": channels,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    }


def worker(case: dict) -> dict:
    """One sampling step of one case; returns the peak memory increase in MiB."""
    import torch

    sys.path.insert(0, str(ROOT))
    from diffusers import UNet2DConditionModel

    from tav import ddim
    from tav.checkpoints import sd_scheduler_config
    from tav.inflation import inflate
    from tav.pipeline import Pipeline
    from tav.windows import Windows

    torch.set_num_threads(case["threads"])
    device = torch.device(case["device"])
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_unet_config(case["channels"], case["latent"])).eval().to(device, dtype)
    pipe = inflate(Pipeline(unet, None, None, None, {"_class_name": "DDIMScheduler", **sd_scheduler_config()}))
    lat = torch.randn(1, 4, case["frames"], case["latent"], case["latent"], device=device)
    emb = torch.randn(1, 77, 768, device=device)
    windows = Windows(case["window"], case["overlap"]) if case["window"] else None

    def step() -> torch.Tensor:
        return ddim.sample(pipe, emb, negative_embeds=emb, latents=lat, steps=1, guidance_scale=7.5, windows=windows)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        return {"peak_mib": peak / 2**20, "exact": True}
    with _procmem.PeakMeter() as meter:
        step()
    return {"peak_mib": meter.increase_kb / 1024, "exact": meter.exact}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", default="64,128,256,256", help="UNet block channels (SD 1.x: 320,640,1280,1280)")
    ap.add_argument("--latent", type=int, default=32, help="latent side (SD at 512 px: 64)")
    ap.add_argument("--frames", type=int, default=8, help="the short clip (the tuned length)")
    ap.add_argument("--long", type=int, default=64, help="the long clip")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--one-pass-long", action="store_true", help="also the long clip in one pass (memory grows)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    base = {
        "channels": [int(c) for c in args.channels.split(",")],
        "latent": args.latent,
        "device": args.device,
        "threads": args.threads,
    }
    cases = [
        {**base, "label": f"{args.frames} frames, one pass", "frames": args.frames, "window": 0, "overlap": 0},
        {
            **base,
            "label": f"{args.long} frames, windows of {args.window} (overlap {args.overlap}, frame-0 anchor)",
            "frames": args.long,
            "window": args.window,
            "overlap": args.overlap,
        },
    ]
    if args.one_pass_long:
        cases.append({**base, "label": f"{args.long} frames, one pass", "frames": args.long, "window": 0, "overlap": 0})
    results = [_procmem.run_worker(__file__, c) for c in cases]
    ref = results[0]["peak_mib"]
    print(f"one DDIM sampling step with CFG; UNet channels {args.channels}, latent {args.latent}, {args.device}")
    print(f"{'case':<62} {'peak MiB':>9} {'vs short':>9}")
    for r in results:
        print(f"{r['label']:<62} {r['peak_mib']:>9.1f} {r['peak_mib'] / ref:>8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
