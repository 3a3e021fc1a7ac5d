"""The GPU check: what the CUDA path really does on one GPU, as one JSON document.

No downloads: an SD1.5-shaped pipeline with random weights is built from the planner's configs.
Measured (``--device cuda``, 512x512; expected to take 3-6 minutes on one modern GPU, not yet run on one):

- tuning (gradient checkpointing, the loaders' half type for frozen weights) for 8/16/24 frames in
  bf16 and fp16: median step time and ``torch.cuda.max_memory_allocated``, with the memory planner's
  estimate of the same peak beside it (and their ratio);
- one inversion step and one guided sampling step at 24 frames: median step time;
- which SDPA kernels the UNet ran (profiler op names), and which kernel the default selection picks
  for each UNet head size (40/80/160 for SD1.x, 64 for SD2.x) with math excluded: the frame
  attentions of a head size with no fused kernel run tav's query-chunked fallback
  (tav.attention_kernels), which shows as math ops here (cross-attention may also use math);
- the bf16-vs-fp32 difference of one UNet call from the same weights and input;
- scoring an edit (``tav.metrics``: the edit and its source, 24 frames at 512x512) with a random model
  of CLIP ViT-L/14's shape in the half type: seconds per frame and ``max_memory_allocated``;
- with ``--comfy-dir`` (and ``--comfy-python``, the Python that runs that ComfyUI), first of all, while
  this process holds no GPU memory: ``dynamic_vram_check.py`` in its own process, under "dynamic_vram":
  the native MODEL path and the pipeline nodes on that live host with dynamic VRAM off and on (where the
  host offers the mode), each mode's errors, wall time and peak GPU memory, and how far the two modes'
  results differ. The ComfyUI's ``custom_nodes/comfyui-tuneavideo`` must link to this checkout. A
  failure there makes the exit status 1; the JSON is written either way.

``--tiny`` runs the same code on a tiny model at 64x64 on the CPU (how CI tests this script); there
the "measured" peak is :class:`tav.memory_probe.LiveBytes` on the real tensors, since the CPU
allocator keeps no peak statistics.

    .venv/bin/python benchmarks/gpu_check.py --out benchmarks/gpu_check_<gpu>.json
    .venv/bin/python benchmarks/gpu_check.py --tiny --device cpu
    .venv/bin/python benchmarks/gpu_check.py --comfy-dir ComfyUI --comfy-python ComfyUI/venv/bin/python --out ...
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tav import ddim  # noqa: E402
from tav import memory_plan as mp  # noqa: E402
from tav.memory_probe import LiveBytes  # noqa: E402
from tav.tuning import TuneConfig, half_dtype, tune  # noqa: E402

TINY_UNET = {
    "sample_size": 8,
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}
TINY_VAE = {"block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 8}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
SDPA_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_attention_math": "math",
}


def configs(tiny: bool) -> mp.ModelConfigs:
    base = mp.sd15_configs()
    if not tiny:
        return base
    return dataclasses.replace(
        base,
        unet={**base.unet, **TINY_UNET},
        vae={**base.vae, **TINY_VAE},
        text_encoder={**base.text_encoder, **TINY_TEXT},
        name="tiny",
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device, pipe: object) -> Iterator[dict]:
    """``{"peak": bytes}`` after the block: ``max_memory_allocated`` on CUDA, the live-bytes tracker on CPU."""
    out: dict = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["peak"] = torch.cuda.max_memory_allocated(device)
        return
    with LiveBytes() as live:
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):  # type: ignore[attr-defined]
            for t in list(m.parameters()) + list(m.buffers()):
                live.adopt(t)
        yield out
    out["peak"] = live.peak


def timed_steps(device: torch.device) -> tuple[list[float], object]:
    """A progress callback that records the time of every step."""
    times: list[float] = []

    def callback(step: int, total: int) -> None:
        sync(device)
        times.append(time.perf_counter())

    return times, callback


def median_step(start: float, times: list[float]) -> float:
    """Median step time, leaving out the first step (warm-up: kernel selection, allocator growth)."""
    deltas = [b - a for a, b in zip([start, *times[:-1]], times, strict=True)]
    return statistics.median(deltas[1:] if len(deltas) > 1 else deltas)


def build(cfg: mp.ModelConfigs, dtype: torch.dtype, device: torch.device) -> object:
    with torch.device(device):
        return mp.build_pipeline(cfg, dtype)


def check_tuning(args: argparse.Namespace, cfg: mp.ModelConfigs, device: torch.device) -> list[dict]:
    planner = mp.planner_for(cfg)
    rows = []
    for precision in args.precisions:
        dtype = mp.PRECISIONS[precision]
        pipe = build(cfg, dtype, device)
        k, c = pipe.latent_factor, pipe.unet.config.in_channels
        embeds = torch.randn(1, 77, pipe.text_encoder.config.hidden_size, device=device)
        for frames in args.frames:
            latents = torch.randn(1, c, frames, args.size // k, args.size // k, device=device)
            job = mp.Job("tune", frames, args.size, args.size, precision, True, "flash", device.type)
            times, callback = timed_steps(device)
            sync(device)
            start = time.perf_counter()
            with peak_memory(device, pipe) as mem:
                tune(pipe, latents, embeds, TuneConfig(steps=args.steps, precision=precision,
                                                       gradient_checkpointing=True), callback=callback)  # fmt: skip
            t0 = time.perf_counter()
            planned = planner.plan(job).phases["tune"]["peak"]
            row = {
                "precision": precision,
                "frames": frames,
                "size": args.size,
                "step_seconds": median_step(start, times),
                "max_memory_allocated": mem["peak"],
                "planned_peak": planned,
                "planned_over_measured": planned / mem["peak"],
                "plan_seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def check_inference(args: argparse.Namespace, cfg: mp.ModelConfigs, device: torch.device) -> dict:
    pipe = build(cfg, mp.PRECISIONS[args.precisions[0]], device)
    frames = max(args.frames)
    k, c = pipe.latent_factor, pipe.unet.config.in_channels
    latents = torch.randn(1, c, frames, args.size // k, args.size // k)
    embeds = torch.randn(1, 77, pipe.text_encoder.config.hidden_size, device=device)
    out = {"frames": frames, "size": args.size, "precision": args.precisions[0]}
    for kind in ("invert", "sample"):
        times, callback = timed_steps(device)
        sync(device)
        start = time.perf_counter()
        with peak_memory(device, pipe) as mem:
            if kind == "invert":
                ddim.invert(pipe, latents.to(device), steps=args.steps, prompt_embeds=embeds, callback=callback)
            else:
                ddim.sample(pipe, embeds, negative_embeds=embeds, latents=latents, steps=args.steps, callback=callback)
        out[f"{kind}_step_seconds"] = median_step(start, times)
        out[f"{kind}_max_memory_allocated"] = mem["peak"]
        job = mp.Job(kind, frames, args.size, args.size, args.precisions[0], True, "flash", device.type)
        out[f"{kind}_planned_peak"] = mp.planner_for(cfg).plan(job).phases[kind]["peak"]
    out["sdpa_ops_in_unet"] = sdpa_ops(lambda: ddim.predict(pipe, latents.to(device), 1, embeds))
    return out


def sdpa_ops(fn: object) -> dict[str, int]:
    """Counts of the SDPA implementations the profiler saw while ``fn`` ran."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()  # type: ignore[operator]
    counts: dict[str, int] = {}
    for e in prof.events():
        if e.name in SDPA_OPS:
            counts[SDPA_OPS[e.name]] = counts.get(SDPA_OPS[e.name], 0) + 1
    return counts


def kernels_by_head_dim(device: torch.device, dtype: torch.dtype, tokens: int) -> dict[str, object]:
    """For each UNet head size: the kernel picked by default, and whether one runs with math excluded."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    out: dict[str, object] = {}
    for d in (40, 64, 80, 160):
        q = torch.randn(2, 8, tokens, d, device=device, dtype=dtype)
        default = sdpa_ops(functools.partial(torch.nn.functional.scaled_dot_product_attention, q, q, q))
        try:
            with sdpa_kernel(fused):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            without_math: object = True
        except RuntimeError as e:
            without_math = f"no fused kernel: {' '.join(str(e).split())[:200]}"
        out[str(d)] = {"default": default, "fused_kernel_runs": without_math}
    return out


def bf16_vs_fp32(cfg: mp.ModelConfigs, device: torch.device, size: int) -> dict[str, float]:
    """One UNet call from the same (random) weights and input in fp32 and in bf16."""
    torch.manual_seed(0)
    ref = build(cfg, torch.float32, device)
    k, c = ref.latent_factor, ref.unet.config.in_channels
    x = torch.randn(1, c, 2, size // k, size // k, device=device)
    e = torch.randn(1, 77, ref.text_encoder.config.hidden_size, device=device)
    with torch.no_grad():
        a = ddim.predict(ref, x, 500, e).float()
        half = ref.replace(unet=ref.unet.to(torch.bfloat16))  # the same weights, rounded
        b = ddim.predict(half, x, 500, e).float()
    return {
        "max_abs_diff": float((a - b).abs().max()),
        "relative_l2": float((a - b).norm() / a.norm()),
        "output_std": float(a.std()),
    }


def check_scoring(args: argparse.Namespace, device: torch.device) -> dict:
    """Scoring time per frame (bench_metrics.py) with CLIP ViT-L/14's shape, or the tests' tiny CLIP."""
    from bench_metrics import scoring_clip, time_scoring

    dtype = half_dtype(device) if device.type == "cuda" else torch.float32
    clip = scoring_clip("tiny" if args.tiny else "clip-l14", device, dtype)
    return time_scoring(clip, max(args.frames), args.size, runs=2 if args.tiny else 5, batch_size=16)


def check_dynamic_vram(args: argparse.Namespace, device: torch.device) -> dict:
    """dynamic_vram_check.py in its own process: its CUDA figures then exclude this process's tensors."""
    with tempfile.TemporaryDirectory(prefix="tav_gpu_check_") as d:
        out = Path(d) / "dynamic_vram.json"
        cmd = [sys.executable, str(Path(__file__).with_name("dynamic_vram_check.py")), "--comfy-dir", args.comfy_dir]
        cmd += ["--device", device.type, "--out", str(out)]
        cmd += ["--comfy-python", args.comfy_python] if args.comfy_python else []
        res = subprocess.run(cmd, capture_output=True, text=True)
        if not out.is_file():
            return {"ok": False, "error": f"dynamic_vram_check.py exited with {res.returncode}: {res.stderr[-3000:]}"}
        return json.loads(out.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny model at 64x64 and 2 frames (CPU, CI)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--comfy-dir", help="also run dynamic_vram_check.py on this ComfyUI (its pack link: this checkout)")
    p.add_argument("--comfy-python", help="the Python that runs that ComfyUI (default: this one)")
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
    if device.type == "cpu" and args.device == "auto" and not args.tiny:
        p.error("no GPU here: pass --tiny to run the check on the CPU at a tiny size")
    args.frames = [2] if args.tiny else [8, 16, 24]
    args.size = 64 if args.tiny else 512
    args.steps = 2 if args.tiny else 4
    args.precisions = ["bf16", "fp16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        args.precisions = ["fp16"]
    cfg = configs(args.tiny)
    t0 = time.perf_counter()
    dynamic_vram = {"dynamic_vram": check_dynamic_vram(args, device)} if args.comfy_dir else {}
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": cfg.name,
        "tuning": check_tuning(args, cfg, device),
        "inference": check_inference(args, cfg, device),
        "sdpa_by_head_dim": kernels_by_head_dim(device, mp.PRECISIONS[args.precisions[0]], 256 if args.tiny else 4096),
        "bf16_vs_fp32_unet": bf16_vs_fp32(cfg, device, args.size),
        "scoring": check_scoring(args, device),
        **dynamic_vram,
    }
    result["seconds"] = time.perf_counter() - t0
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if dynamic_vram.get("dynamic_vram", {}).get("ok", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
