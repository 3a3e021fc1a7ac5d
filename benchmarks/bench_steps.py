#!/usr/bin/env python
"""Tuning-step and sampling-step cost of tav against the official Tune-A-Video code, on the CPU.

One random Stable-Diffusion-shaped model (UNet with the given block channels, SD block types,
layers_per_block 2, 8 heads, cross-attention dim 768; a 4-level SD-shaped VAE with small
channels; a small 768-wide CLIP text encoder) is built once, its 2-D UNet weights saved, and both
implementations load those same weights in their own child processes:

- ours (this venv): ``tav.inflation.inflate`` + ``tav.tuning.tune`` (latents and prompt embedding
  encoded once, as tav does) with gradient checkpointing on and off, and ``tav.ddim.sample``;
- official (``benchmarks/_official_step.py`` under the official venv, see ``setup_official.sh``):
  ``UNet3DConditionModel.from_pretrained_2d`` and the per-step body of ``train_tuneavideo.py``
  (VAE encode + text encoder + UNet forward/backward + AdamW; gradient checkpointing on, as its
  configs) plus the same step with the latents/embedding precomputed, and one step of its
  pipeline's denoising loop.

Every configuration runs in a fresh child process; the two implementations' children alternate
per frame count (``--rounds`` > 1 alternates more finely) so they see the same machine load.
Times: per-step wall clock, median over ``--repeats`` steps after ``--warmup`` steps. Memory:
separate children with ``MALLOC_MMAP_THRESHOLD_=65536``; the peak RSS increase of a phase over the
RSS right before it (kernel high-water mark, see ``_procmem.py``).

    .venv/bin/python benchmarks/bench_steps.py --frames 4,8,16 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _procmem

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tav.checkpoints import sd_scheduler_config  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OFFICIAL_PY = "/tmp/venv_official/bin/python"
DEFAULT_OFFICIAL_SRC = "/tmp/tav_official"
PROMPT = "a man is skiing"

SCHEDULER = {"_class_name": "DDIMScheduler", **sd_scheduler_config()}

OURS_PHASES = ("sample", "tune_gc", "tune_nogc")
OFFICIAL_PHASES = ("sample", "tune_full_gc", "tune_unet_gc", "tune_full_nogc")
PHASE_LABELS = {
    ("ours", "tune_gc"): "ours, grad-ckpt on",
    ("ours", "tune_nogc"): "ours, grad-ckpt off",
    ("official", "tune_full_gc"): "official, as shipped (VAE+TE every step, grad-ckpt on)",
    ("official", "tune_unet_gc"): "official, latents+embedding precomputed, grad-ckpt on",
    ("official", "tune_full_nogc"): "official, VAE+TE every step, grad-ckpt off",
}


# ---------------------------------------------------------------------------------------------
# model spec (plain dicts that both diffusers 0.11 and 0.42 accept)


def make_spec(args: argparse.Namespace, workdir: Path) -> dict:
    channels = [int(c) for c in args.channels.split(",")]
    n = len(channels)
    vae_channels = [int(c) for c in args.vae_channels.split(",")]
    unet = {
        "sample_size": args.latent,
        "in_channels": 4,
        "out_channels": 4,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        "block_out_channels": channels,
        "layers_per_block": 2,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": args.cross_dim,
        "attention_head_dim": args.heads,  # SD 1.x's (mis)name for the number of heads
    }
    vae = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(vae_channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(vae_channels),
        "block_out_channels": vae_channels,
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": args.latent * 2 ** (len(vae_channels) - 1),
    }
    text = {
        "vocab_size": 49408,
        "hidden_size": args.cross_dim,
        "intermediate_size": 4 * args.cross_dim,
        "num_hidden_layers": args.text_layers,
        "num_attention_heads": 12 if args.cross_dim % 12 == 0 else 8,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }
    return {
        "unet": unet,
        "vae": vae,
        "text": text,
        "scheduler": SCHEDULER,
        "latent": args.latent,
        "pixels": vae["sample_size"],
        "model_dir": str(workdir / "model"),
        "tokenizer": str(ROOT / "tav" / "assets" / "clip_tokenizer"),
        "prompt": PROMPT,
        "seed": args.seed,
        "threads": args.threads,
    }


def save_unet(spec: dict) -> None:
    """Random 2-D UNet weights in the layout ``from_pretrained_2d`` reads (config.json + .bin)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(spec["seed"])
    unet = UNet2DConditionModel(**spec["unet"])
    folder = Path(spec["model_dir"]) / "unet"
    folder.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.11.1", **spec["unet"]}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(unet.state_dict(), folder / "diffusion_pytorch_model.bin")


# ---------------------------------------------------------------------------------------------
# our worker (runs in a child of this venv)


def _build_ours(spec: dict):  # noqa: ANN202
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    sys.path.insert(0, str(ROOT))
    from tav.inflation import inflate
    from tav.pipeline import Pipeline

    torch.manual_seed(spec["seed"])
    unet = UNet2DConditionModel(**spec["unet"])
    sd = torch.load(Path(spec["model_dir"]) / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
    unet.load_state_dict(sd)
    vae = AutoencoderKL(**spec["vae"])
    text = CLIPTextModel(CLIPTextConfig(**spec["text"]))
    tok = CLIPTokenizer.from_pretrained(spec["tokenizer"], local_files_only=True)
    pipe = Pipeline(unet.eval(), vae.eval(), text.eval(), tok, dict(spec["scheduler"]))
    return inflate(pipe)


class _StepClock:
    """Callback that records the wall and process CPU time between consecutive ``(step, total)`` calls."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.start()

    def start(self) -> None:
        self.last, self.last_cpu = time.perf_counter(), time.process_time()

    def __call__(self, step: int, total: int) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.times.append(now - self.last)
        self.cpu_times.append(cpu - self.last_cpu)
        self.last, self.last_cpu = now, cpu


def worker_ours(spec: dict, frames: int, warmup: int, repeats: int, phases: list[str]) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from tav.ddim import sample
    from tav.tuning import TuneConfig, tune

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    pipe = _build_ours(spec)
    gen = torch.Generator().manual_seed(spec["seed"])
    px = spec["pixels"]
    video = torch.rand(frames, px, px, 3, generator=gen)
    latents = pipe.encode_video(video, sample=gen)  # once, as tav does (the reference: every step)
    cond = pipe.encode_prompt(spec["prompt"])
    uncond = pipe.encode_prompt("")
    out: dict = {"impl": "ours", "frames": frames, "threads": torch.get_num_threads(), "phases": {}}
    for phase in phases:
        gc.collect()
        clock = _StepClock()
        if phase == "sample":
            x = torch.randn(latents.shape, generator=gen)
            with _procmem.PeakMeter() as mem:
                clock.start()
                sample(
                    pipe,
                    cond,
                    negative_embeds=uncond,
                    latents=x,
                    steps=warmup + repeats,
                    guidance_scale=12.5,
                    callback=clock,
                )
        elif phase in ("tune_gc", "tune_nogc"):
            config = TuneConfig(steps=warmup + repeats, gradient_checkpointing=phase == "tune_gc")
            with _procmem.PeakMeter() as mem:
                clock.start()
                result = tune(pipe, latents, cond, config, callback=clock)
            del result
        else:
            raise ValueError(f"unknown phase {phase!r} for ours")
        out["phases"][phase] = {
            "times": clock.times[warmup:],
            "warmup_times": clock.times[:warmup],
            "cpu_times": clock.cpu_times[warmup:],
            **mem.as_dict(),
        }
    return out


def worker_equiv_ours(spec: dict, frames: int, latent: int, path: Path) -> dict:
    """Our VideoUNet on random inputs, with every norm and temporal weight randomised, saved for the official side."""
    import torch
    from torch import nn

    results = {}
    pipe = _build_ours(spec)
    unet = pipe.unet
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in unet.unet.named_parameters():
            if "attn_temp.to_out.0.weight" in name:  # zero-initialised: randomise, or attn_temp is untested
                nn.init.kaiming_uniform_(p, a=5**0.5, generator=gen)
            elif "norm" in name and p.ndim == 1:  # GroupNorm / LayerNorm affine, incl. norm_temp
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
    b, c = 2, unet.config.in_channels
    x = torch.randn(b, c, frames, latent, latent, generator=gen)
    t = torch.tensor([700, 25])
    ehs = torch.randn(b, 77, unet.config.cross_attention_dim, generator=gen)
    for dtype in (torch.float32, torch.float64):
        unet.to(dtype)
        with torch.no_grad():
            results[str(dtype).split(".")[-1]] = unet(x.to(dtype), t, ehs.to(dtype))
    # negative controls (float64): the same weights with one reference behaviour switched off must NOT match
    from tav.attention import FrameContext, SparseCausalAttnProcessor
    from tav.inflation import VideoGroupNorm

    with torch.no_grad():
        norms = [m for m in unet.modules() if isinstance(m, VideoGroupNorm)]
        for m in norms:
            m.ctx = FrameContext(1)  # statistics per frame instead of per video
        results["control_per_frame_groupnorm"] = unet(x.double(), t, ehs.double())
        for m in norms:
            m.ctx = unet.ctx
        procs = [
            a.processor for a in unet.modules() if isinstance(getattr(a, "processor", None), SparseCausalAttnProcessor)
        ]
        for proc in procs:
            proc.mode = "frame"  # plain per-frame self-attention instead of sparse-causal
        results["control_per_frame_attn1"] = unet(x.double(), t, ehs.double())
        for proc in procs:
            proc.mode = "sparse_causal"
        hooks = [m for m in unet.modules() if hasattr(m, "attn_temp")]
        saved = [(m.attn_temp.to_out[0].weight.clone(), m.attn_temp.to_out[0].bias.clone()) for m in hooks]
        for m in hooks:
            m.attn_temp.to_out[0].weight.zero_()
            m.attn_temp.to_out[0].bias.zero_()
        results["control_no_temporal_attn"] = unet(x.double(), t, ehs.double())
        for m, (w, bias) in zip(hooks, saved, strict=True):
            m.attn_temp.to_out[0].weight.copy_(w)
            m.attn_temp.to_out[0].bias.copy_(bias)
    unet.float()
    torch.save({"state_dict": unet.unet.state_dict(), "sample": x, "timestep": t, "ehs": ehs, "out": results}, path)
    return {"saved": str(path)}


# ---------------------------------------------------------------------------------------------
# orchestration


def _run_child(cmd: list[str], out_path: Path, env: dict | None = None, timeout: float = 3600) -> dict:
    if out_path.exists():
        out_path.unlink()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out_path.exists():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"child failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(out_path.read_text())


def _child_cmd(
    impl: str,
    args: argparse.Namespace,
    spec_path: Path,
    frames: int,
    warmup: int,
    repeats: int,
    phases: list[str],
    out: Path,
) -> list[str]:
    common = [
        "--spec",
        str(spec_path),
        "--frames",
        str(frames),
        "--warmup",
        str(warmup),
        "--repeats",
        str(repeats),
        "--phases",
        ",".join(phases),
        "--out",
        str(out),
    ]
    if impl == "ours":
        return [sys.executable, str(Path(__file__).resolve()), "--worker", "ours", *common]
    return [args.official_python, str(HERE / "_official_step.py"), "--src", args.official_src, *common]


def _mb(kb: float) -> float:
    return kb / 1024.0


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def check_equivalence(args: argparse.Namespace, spec: dict, spec_path: Path, workdir: Path) -> list[dict]:
    reports = []
    for frames in (2, 4):
        path = workdir / f"equiv_{frames}.pt"
        worker_equiv_ours(spec, frames, args.check_latent, path)
        out = workdir / f"equiv_{frames}.json"
        cmd = [
            args.official_python,
            str(HERE / "_official_step.py"),
            "--src",
            args.official_src,
            "--spec",
            str(spec_path),
            "--equiv",
            str(path),
            "--out",
            str(out),
        ]
        rep = _run_child(cmd, out)
        rep["frames"] = frames
        reports.append(rep)
        for dtype, r in rep["results"].items():
            if dtype.startswith("control"):
                print(
                    f"  negative control {dtype[8:]} (float64, {frames} frames): max diff {r['max_abs_diff']:.3g} "
                    "(must be large)",
                    flush=True,
                )
                continue
            print(
                f"equivalence {frames} frames {args.check_latent}x{args.check_latent} latents, batch 2, {dtype}: "
                f"max|ours-official| = {r['max_abs_diff']:.3g} (max|out| {r['max_abs_out']:.3g}, "
                f"rel {r['max_abs_diff'] / r['max_abs_out']:.2g})",
                flush=True,
            )
    return reports


def prepare(args: argparse.Namespace) -> tuple[Path, dict, Path]:
    """Work folder, model spec and its JSON path; the random UNet both implementations load is saved there."""
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tav_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    spec = make_spec(args, workdir)
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    save_unet(spec)
    return workdir, spec, spec_path


def run(args: argparse.Namespace) -> dict:
    workdir, spec, spec_path = prepare(args)
    impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    frames_list = [int(f) for f in args.frames.split(",")]
    report: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "processor": _cpu_model(),
        },
        "args": vars(args),
        "spec": spec,
        "runs": [],
        "memory": [],
    }
    if args.check and "official" in impls:
        report["equivalence"] = check_equivalence(args, spec, spec_path, workdir)

    def phases(impl: str, frames: int) -> list[str]:
        if impl == "ours":
            return [p for p in OURS_PHASES if p in args.phases_ours.split(",")]
        chosen = [p for p in OFFICIAL_PHASES if p in args.phases_official.split(",")]
        if frames > args.official_nogc_max_frames:  # its stored score matrices grow past this machine's memory
            chosen = [p for p in chosen if p != "tune_full_nogc"]
        return chosen

    t_start = time.time()
    for frames in frames_list:
        for r in range(args.rounds):
            order = impls if r % 2 == 0 else impls[::-1]
            for impl in order:
                repeats = args.repeats
                if impl == "official" and frames >= args.official_fewer_from:
                    repeats = args.official_repeats_large
                out = workdir / f"time_{impl}_{frames}_{r}.json"
                cmd = _child_cmd(impl, args, spec_path, frames, args.warmup, repeats, phases(impl, frames), out)
                t0 = time.time()
                res = _run_child(cmd, out)
                res["round"] = r
                report["runs"].append(res)
                summary = ", ".join(
                    f"{k} {_median(v['cpu_times']):.2f}s cpu/{_median(v['times']):.2f}s wall"
                    for k, v in res["phases"].items()
                )
                print(
                    f"[{time.time() - t_start:6.0f}s] time {impl:8s} f={frames:<3d} round {r}: {summary} "
                    f"({time.time() - t0:.0f}s)",
                    flush=True,
                )
        if args.memory_steps > 0:
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            for impl in impls:
                out = workdir / f"mem_{impl}_{frames}.json"
                cmd = _child_cmd(impl, args, spec_path, frames, 0, args.memory_steps, phases(impl, frames), out)
                res = _run_child(cmd, out, env=env)
                report["memory"].append(res)
                summary = ", ".join(f"{k} +{_mb(v['increase_kb']):.0f}MB" for k, v in res["phases"].items())
                print(f"[{time.time() - t_start:6.0f}s] mem  {impl:8s} f={frames:<3d}: {summary}", flush=True)
    report["elapsed_s"] = time.time() - t_start
    report["summary"] = summarise(report)
    return report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def summarise(report: dict) -> dict:
    """``{impl: {phase: {frames: stats}}}``: median step time, its spread, and peak memory."""
    out: dict = {}
    for res in report["runs"]:
        for phase, v in res["phases"].items():
            st = (
                out.setdefault(res["impl"], {})
                .setdefault(phase, {})
                .setdefault(str(res["frames"]), {"times": [], "cpu_times": []})
            )
            st["times"].extend(v["times"])
            st["cpu_times"].extend(v.get("cpu_times", []))
            for k in ("trainable_tensors", "trainable_tensors_without_grad"):
                if k in v:
                    st[k] = v[k]
    for res in report["memory"]:
        for phase, v in res["phases"].items():
            st = (
                out.setdefault(res["impl"], {})
                .setdefault(phase, {})
                .setdefault(str(res["frames"]), {"times": [], "cpu_times": []})
            )
            st["peak_increase_mb"] = _mb(v["increase_kb"])
            st["peak_rss_mb"] = _mb(v["peak_kb"])
            st["base_rss_mb"] = _mb(v["base_kb"])
    for phases in out.values():
        for by_frames in phases.values():
            for st in by_frames.values():
                ts = st["times"]
                st["median_s"] = _median(ts)
                st["min_s"] = min(ts) if ts else float("nan")
                st["max_s"] = max(ts) if ts else float("nan")
                st["n"] = len(ts)
                st["median_cpu_s"] = _median(st["cpu_times"])
    return out


def _get(summary: dict, impl: str, phase: str, frames: int, key: str) -> float:
    return summary.get(impl, {}).get(phase, {}).get(str(frames), {}).get(key, float("nan"))


def _f(v: float, spec: str = ".2f") -> str:
    return "–" if v != v else format(v, spec)  # NaN -> dash


def _ratio(summary: dict, impl: str, phase: str, ref_phase: str, frames: int, key: str) -> float:
    return _get(summary, impl, phase, frames, key) / _get(summary, "official", ref_phase, frames, key)


def _time_cell(summary: dict, impl: str, phase: str, f: int) -> str:
    g = lambda k: _get(summary, impl, phase, f, k)  # noqa: E731
    return f"{_f(g('median_cpu_s'), '.2f')} | {_f(g('median_s'), '.2f')} [{_f(g('min_s'))}–{_f(g('max_s'))}] ({g('n')})"


def _ratio_cell(summary: dict, phase: str, ref: str, f: int) -> str:
    cpu = _ratio(summary, "ours", phase, ref, f, "median_cpu_s")
    wall = _ratio(summary, "ours", phase, ref, f, "median_s")
    mem = _ratio(summary, "ours", phase, ref, f, "peak_increase_mb")
    return f"{_f(cpu)} ({_f(wall)}) | {_f(mem)}"


def format_tables(summary: dict, frames_list: list[int]) -> str:
    """Markdown: tuning step, sampling step, scaling in frames."""
    timing = "CPU s | wall s [min–max] (n)"
    lines = [
        "Tuning step: median process CPU time and wall time per step; peak = RSS high-water mark over the RSS "
        "before the phase. Ratios ours/official: time on CPU time (wall in brackets), then memory.",
        "",
        f"| impl, variant | frames | {timing} | peak +MB | ours/official as shipped: time | mem "
        "| ours/official UNet-only: time | mem |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    variants = [("ours", p) for p in OURS_PHASES if p != "sample"] + [
        ("official", p) for p in OFFICIAL_PHASES if p != "sample"
    ]
    for impl, phase in variants:
        if phase not in summary.get(impl, {}):
            continue
        for f in frames_list:
            if str(f) not in summary[impl][phase]:
                continue
            m = _get(summary, impl, phase, f, "peak_increase_mb")
            cells = [PHASE_LABELS[(impl, phase)], str(f), _time_cell(summary, impl, phase, f), _f(m, ".0f")]
            if impl == "ours":
                cells += [
                    _ratio_cell(summary, phase, "tune_full_gc", f),
                    _ratio_cell(summary, phase, "tune_unet_gc", f),
                ]
            else:
                cells += [" | ", " | "]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Sampling step: one CFG UNet call on 2 videos + the DDIM update.",
        "",
        f"| impl | frames | {timing} | peak +MB | ours/official: time | mem |",
        "|---|---|---|---|---|---|---|",
    ]
    for impl in ("ours", "official"):
        for f in frames_list:
            if str(f) not in summary.get(impl, {}).get("sample", {}):
                continue
            m = _get(summary, impl, "sample", f, "peak_increase_mb")
            cells = [impl, str(f), _time_cell(summary, impl, "sample", f), _f(m, ".0f")]
            cells.append(_ratio_cell(summary, "sample", "sample", f) if impl == "ours" else " | ")
            lines.append("| " + " | ".join(cells) + " |")
    lo = min(frames_list)
    others = [f for f in frames_list if f != lo]
    if others:
        head = " | ".join(f"CPU time {f}/{lo} (ideal {f / lo:g})" for f in others)
        headm = " | ".join(f"mem {f}/{lo}" for f in others)
        lines += [
            "",
            f"Scaling with frames: cost at N frames over cost at {lo} (linear = N/{lo}).",
            "",
            f"| impl, phase | {head} | {headm} |",
            "|---|" + "---|" * (2 * len(others)),
        ]
        order = [("ours", "sample"), *[v for v in variants if v[0] == "ours"]]
        order += [("official", "sample"), *[v for v in variants if v[0] == "official"]]
        for impl, phase in order:
            if phase not in summary.get(impl, {}):
                continue
            t0 = _get(summary, impl, phase, lo, "median_cpu_s")
            m0 = _get(summary, impl, phase, lo, "peak_increase_mb")
            ts = [_f(_get(summary, impl, phase, f, "median_cpu_s") / t0) for f in others]
            ms = [_f(_get(summary, impl, phase, f, "peak_increase_mb") / m0) for f in others]
            label = PHASE_LABELS.get((impl, phase), f"{impl}, sampling")
            lines.append(f"| {label} | " + " | ".join(ts + ms) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--channels", default="64,128,256,256", help="UNet block_out_channels (official: exactly 4 blocks)")
    p.add_argument("--latent", type=int, default=32, help="latent height = width (pixels = 8x with a 4-level VAE)")
    p.add_argument("--frames", default="4,8,16")
    p.add_argument("--repeats", type=int, default=5, help="measured steps per phase and child")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps before them")
    p.add_argument("--rounds", type=int, default=1, help="children per impl and frame count, alternating impls")
    p.add_argument("--impl", default="ours,official", help="ours and/or official")
    p.add_argument("--phases-ours", default=",".join(OURS_PHASES))
    p.add_argument("--phases-official", default=",".join(OFFICIAL_PHASES))
    p.add_argument(
        "--official-fewer-from",
        type=int,
        default=1 << 30,
        help="frame count from which the official runs --official-repeats-large repeats instead of --repeats",
    )
    p.add_argument("--official-repeats-large", type=int, default=3)
    p.add_argument(
        "--official-nogc-max-frames",
        type=int,
        default=8,
        help="run the official without gradient "
        "checkpointing only up to this many frames (it keeps every attention score matrix for backward)",
    )
    p.add_argument("--memory-steps", type=int, default=2, help="steps per phase in the memory children (0: skip)")
    p.add_argument("--cross-dim", type=int, default=768)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vae-channels", default="32,64,128,128", help="SD's VAE is 128,256,512,512")
    p.add_argument("--text-layers", type=int, default=4, help="CLIP-L has 12")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in every child (0: torch's default). "
        "1 by default: on a shared 2-core machine a 2-thread OpenMP team is several times slower and "
        "far noisier whenever another process holds a core",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--official-python", default=DEFAULT_OFFICIAL_PY)
    p.add_argument("--official-src", default=DEFAULT_OFFICIAL_SRC, help="folder holding the official tuneavideo/")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the output-equivalence check")
    p.add_argument("--check-latent", type=int, default=16)
    p.add_argument("--only-check", action="store_true", help="run the equivalence check only")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a new temp dir)")
    p.add_argument("--json", default=None, help="write the full report here")
    # internal: child mode
    p.add_argument("--worker", choices=["ours"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--phases", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker == "ours":
        spec = json.loads(Path(args.spec).read_text())
        res = worker_ours(spec, int(args.frames), args.warmup, args.repeats, args.phases.split(","))
        Path(args.out).write_text(json.dumps(res))
        return 0

    if args.only_check:
        workdir, spec, spec_path = prepare(args)
        reps = check_equivalence(args, spec, spec_path, workdir)
        if args.json:
            Path(args.json).write_text(json.dumps({"equivalence": reps}, indent=2))
        return 0

    report = run(args)
    frames_list = [int(f) for f in args.frames.split(",")]
    report["tables_md"] = format_tables(report["summary"], frames_list)
    print()
    print(report["tables_md"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
