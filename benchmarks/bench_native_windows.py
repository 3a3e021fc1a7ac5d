#!/usr/bin/env python
"""Peak memory of one native-path sampling step: an 8-frame clip vs a 64-frame clip in context windows of 8.

Why: on the native path ComfyUI's sampler runs the tuned MODEL; Context Windows (Tune-A-Video)
should keep a step at one window's memory, as ``tav``'s windows do (``bench_windows.py``). A
single-file SD1.5-shaped checkpoint (e.g. the tiny one ``scripts/make_tiny_sd15.py`` writes) is
loaded by ComfyUI as a stock MODEL, patched by Tune-A-Video → MODEL with random tuned weights, and
sampled for one DDIM step with CFG (CFGGuider, ``ddim``) on:

- ``--frames`` (8) frames without windows (the tuned length, the baseline);
- ``--long`` (64) frames in windows of ``--window`` (8), overlap ``--overlap`` (2), frame-0 anchor;
- optionally (``--one-pass-long``) the long clip without windows, to show what windows save.

Each case runs in a fresh child process, after one warm-up step of the same case (ComfyUI patches
the weights on the first step); the peak is the RSS high-water mark over the second step minus the
RSS before it (``_procmem.py``, ``MALLOC_MMAP_THRESHOLD_=65536``). Nothing is asserted on time.

    .venv/bin/python benchmarks/bench_native_windows.py CKPT --comfy-dir ComfyUI [--latent 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import _procmem

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worker(case: dict) -> dict:
    """Two sampling steps of one case; returns the second one's peak memory increase in MiB."""
    sys.path.insert(0, case["comfy_dir"])
    os.chdir(case["comfy_dir"])
    from comfy.cli_args import args

    args.cpu = True
    import comfy.samplers
    import comfy.sd
    import torch

    spec = importlib.util.spec_from_file_location(
        "tav_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    pack = importlib.util.module_from_spec(spec)
    sys.modules["tav_pack"] = pack
    spec.loader.exec_module(pack)
    from tav_pack.nodes import context_windows
    from tav_pack.nodes import native as glue

    from tav import checkpoints, inflation, native
    from tav.windows import Windows

    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    model, _, _, _ = comfy.sd.load_checkpoint_guess_config(case["ckpt"], output_vae=False, output_clip=False)
    video = inflation.inflate(checkpoints.load_pipeline(case["ckpt"], device="cpu", dtype=torch.float32), seed=0)
    patched = glue.apply_tuned(model, native.tuned_from_pipeline(video))
    del video
    if case["window"]:
        patched = context_windows.context_windows(patched, Windows(case["window"], case["overlap"]))
    latent = torch.randn(case["frames"], 4, case["latent"], case["latent"])
    emb = torch.randn(1, 77, 768)
    sigmas = native.reference_sigmas(glue.model_sigma_table(patched), 50)[:2]

    def step() -> torch.Tensor:
        guider = comfy.samplers.CFGGuider(patched)
        guider.set_conds([[emb, {}]], [[emb.clone(), {}]])
        guider.set_cfg(7.5)
        sampler = comfy.samplers.sampler_object("ddim")
        return guider.sample(torch.zeros_like(latent), latent, sampler, sigmas, disable_pbar=True, seed=0)

    with torch.no_grad():
        step()
        with _procmem.PeakMeter() as meter:
            step()
    return {"peak_mib": meter.increase_kb / 1024, "exact": meter.exact}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", nargs="?", help="an SD1.5-shaped single-file checkpoint")
    ap.add_argument("--comfy-dir", default=str(ROOT / ".venv" / "comfyui"))
    ap.add_argument("--latent", type=int, default=16, help="latent side (128 px: 16)")
    ap.add_argument("--frames", type=int, default=8, help="the short clip (the tuned length)")
    ap.add_argument("--long", type=int, default=64, help="the long clip")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--one-pass-long", action="store_true", help="also the long clip without windows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if not args.ckpt:
        ap.error("give a checkpoint (scripts/make_tiny_sd15.py writes a small one)")
    base = {
        "ckpt": str(Path(args.ckpt).resolve()),
        "comfy_dir": str(Path(args.comfy_dir).resolve()),
        "latent": args.latent,
        "threads": args.threads,
    }
    cases = [
        {**base, "label": f"{args.frames} frames, no windows", "frames": args.frames, "window": 0, "overlap": 0},
        {
            **base,
            "label": f"{args.long} frames, context windows of {args.window} (overlap {args.overlap}, anchor)",
            "frames": args.long,
            "window": args.window,
            "overlap": args.overlap,
        },
    ]
    if args.one_pass_long:
        cases.append(
            {**base, "label": f"{args.long} frames, no windows", "frames": args.long, "window": 0, "overlap": 0}
        )
    results = [_procmem.run_worker(__file__, c) for c in cases]
    ref = results[0]["peak_mib"]
    print(f"one native DDIM sampling step with CFG; {Path(args.ckpt).name}, latent {args.latent}, CPU")
    print(f"{'case':<62} {'peak MiB':>9} {'vs short':>9}")
    for r in results:
        print(f"{r['label']:<62} {r['peak_mib']:>9.1f} {r['peak_mib'] / ref:>8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
