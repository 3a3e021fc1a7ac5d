"""``python -m tav``: tune, invert, sample, edit, run an official config, score an edit, plan memory, or the demo.

Every subcommand works offline on a local model (a diffusers folder or a single-file SD 1.x/2.x
checkpoint). Progress goes to tqdm. Every setting, input and output location is checked before any
model is loaded (:mod:`tav.validation`); bad input ends with one ``error:`` line and exit status 2,
approximate requests with a ``warning:`` line, Ctrl-C with one ``interrupted`` line (status 130);
outputs are written atomically, so none of these leaves a partial file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import torch

from . import ddim, windows
from . import memory_plan as mp
from . import validation as v
from .attention import ATTENTION_MODES
from .editing import EditConfig, tune_and_edit, write_edits
from .inflation import NORMS
from .job_size import check_job_size
from .pipeline import Pipeline
from .tuning import DEFAULT_TRAINABLE, TuneConfig, half_dtype


def _device(name: str) -> torch.device:
    return v.check_device(name)


def _load(model: str, device: torch.device, prediction_type: Optional[str]) -> Pipeline:
    from .checkpoints import load_pipeline

    dtype = half_dtype(device) if device.type == "cuda" else torch.float32  # frozen; tuning keeps fp32 masters
    return load_pipeline(model, device=device, dtype=dtype, prediction_type=prediction_type)


_OPEN_BARS: list[_Bars] = []


def _close_bars() -> None:
    """Finish every progress bar, so an error or ``interrupted`` is the last line printed."""
    while _OPEN_BARS:
        _OPEN_BARS.pop().close()


class _Bars:
    """Map the core's (phase, step, total) callback to one tqdm bar per phase."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm, self._bars = tqdm, {}
        _OPEN_BARS.append(self)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()

    def __call__(self, phase: str, step: int, total: int) -> None:
        bar = self._bars.get(phase)
        if bar is None:
            bar = self._bars[phase] = self._tqdm(total=total, desc=phase, leave=True)
        bar.update(step - bar.n)
        if step == total:
            bar.close()

    def phase(self, name: str):  # noqa: ANN201 - ProgressFn
        return lambda step, total: self(name, step, total)


def _read_clip(args: argparse.Namespace):  # noqa: ANN202 - VideoClip
    from .video_io import read_video

    return read_video(
        args.video,
        n_frames=args.frames,
        start=args.start,
        stride=args.stride,
        width=args.width,
        height=args.height,
        resize=args.resize,
    )


def _tune_config(args: argparse.Namespace) -> TuneConfig:
    return TuneConfig(
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        trainable_modules=tuple(args.trainable),
        precision=args.precision,
        gradient_checkpointing={"auto": None, "on": True, "off": False}[args.gradient_checkpointing],
    )


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="diffusers folder or single-file SD 1.x/2.x checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--prediction-type",
        choices=["epsilon", "v_prediction"],
        default=None,
        help="override the model's prediction type (SD 2.x 512-base: epsilon)",
    )


def _add_video(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", required=True, help="mp4/mov/webm/gif to tune on")
    p.add_argument("--frames", type=int, default=24, help="frames to sample (reference: 24)")
    p.add_argument("--start", type=int, default=0, help="first frame index")
    p.add_argument("--stride", type=int, default=2, help="take every n-th frame (reference: 2)")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument(
        "--resize",
        choices=["stretch", "crop", "none"],
        default="stretch",
        help="stretch (reference) or aspect-preserving center crop",
    )


def _add_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=500, help="tuning steps (paper: 500)")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--seed", type=int, default=33)
    p.add_argument("--trainable", nargs="+", default=list(DEFAULT_TRAINABLE), help="module-name suffixes to train")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    p.add_argument(
        "--norm",
        choices=NORMS,
        default="video",
        help="GroupNorm over all frames (reference) or per frame (better on the shapes model)",
    )
    p.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default="sparse_causal",
        help="sparse-causal keys: frames 0 and i-1 (reference), sparse_causal_self adds frame i; frame: none",
    )
    p.add_argument(
        "--gradient-checkpointing",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: on for CUDA, off on CPU (where it only costs time)",
    )


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--inversion-steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=12.5, help="classifier-free guidance scale (paper: 12.5)")
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--sample-seed", type=int, default=33)
    p.add_argument("--fps", type=float, default=None, help="output fps (default: the sampled clip's)")


# --- up-front checks (no model loaded, nothing decoded) ----------------------------------------


def _check_model(args: argparse.Namespace) -> None:
    if not os.path.exists(args.model):
        raise FileNotFoundError(f"model not found: {args.model} (a diffusers folder or a .safetensors file)")
    args.device = str(_device(args.device))


def _check_video(args: argparse.Namespace) -> None:
    v.check_input_file(args.video, "video file")
    frames = v.check_number("--frames", args.frames, -1, v.MAX_FRAMES, integer=True, hint="0 or -1 = every frame")
    v.check_number("--start", args.start, 0, integer=True)
    v.check_number("--stride", args.stride, 1, 10_000, integer=True)
    if args.resize != "none":
        _check_size(args.width, args.height)
        if frames > 0:
            check_job_size(frames, args.height, args.width, kind="load")


def _check_size(width: Any, height: Any) -> None:
    for name, value in (("--width", width), ("--height", height)):
        v.check_number(name, value, 8, v.MAX_SIDE, integer=True)
        if value % 8:
            raise v.InputError(f"{name} must be a multiple of 8 (the VAE downsamples by 8), got {value}")


def _check_tune(args: argparse.Namespace) -> None:
    v.check_number("--steps", args.steps, 1, v.MAX_TUNE_STEPS, integer=True, hint="the paper uses 500")
    v.check_number("--lr", args.lr, 1e-10, 1.0, hint="the paper uses 3e-5")
    v.check_seed("--seed", args.seed)
    if not args.trainable or not all(t.strip() for t in args.trainable):
        raise v.InputError("--trainable needs module-name suffixes such as attn1.to_q attn2.to_q attn_temp")


def _check_sampling(args: argparse.Namespace) -> None:
    v.check_number("--sample-steps", args.sample_steps, 1, v.MAX_STEPS, integer=True, hint="the paper uses 50")
    v.check_number("--inversion-steps", args.inversion_steps, 1, v.MAX_STEPS, integer=True, hint="the paper uses 50")
    v.check_number("--cfg", args.cfg, 0, 100, hint="the paper uses 12.5; 1 disables guidance")
    v.check_number("--eta", args.eta, 0, 1, hint="0 is deterministic DDIM (the paper), 1 adds DDPM-like noise")
    v.check_seed("--sample-seed", args.sample_seed)
    if args.fps is not None:
        v.check_number("--fps", args.fps, 0.1, 240, hint="frames per second of the written videos")


def _check_prompts(prompts: Sequence[str], flag: str) -> None:
    for text in prompts:
        if not isinstance(text, str) or "\x00" in text:
            raise v.InputError(f"{flag} contains a NUL character; pass plain text")


# --- commands -----------------------------------------------------------------------------------


def cmd_tune(args: argparse.Namespace) -> None:
    from .inflation import inflate
    from .tuning import tune
    from .weights import save_tuned

    v.check_output_file(args.out, exts=(".safetensors",), what="--out")
    _check_model(args), _check_video(args), _check_tune(args), _check_prompts([args.prompt], "--prompt")
    clip = _read_clip(args)
    pipe = inflate(
        _load(args.model, _device(args.device), args.prediction_type), norm=args.norm, attention=args.attention
    )
    f, h, w = clip.frames.shape[:3]
    cfg = _tune_config(args)
    mp.check_pipeline_job(pipe, f, h, w, "tune", precision=cfg.precision, checkpointing=cfg.gradient_checkpointing)
    result = tune(
        pipe,
        pipe.encode_video(clip.frames),
        pipe.encode_prompt(args.prompt),
        cfg,
        _Bars().phase("tune"),
        prompt=args.prompt,
    )
    save_tuned(args.out, result.pipeline)
    print(
        json.dumps(
            {
                "out": str(args.out),
                "loss_first": result.losses[0],
                "loss_last": result.losses[-1],
                "trainable_params": result.trainable_params,
            }
        )
    )


def _tuned_or_inflated(args: argparse.Namespace) -> Pipeline:
    from .checkpoints import is_tav_checkpoint, load_reference_pipeline
    from .inflation import inflate
    from .weights import load_tuned

    if os.path.isdir(args.model) and is_tav_checkpoint(args.model):
        if args.tuned:
            raise ValueError(f"{args.model} is an official Tune-A-Video checkpoint, already tuned: drop --tuned")
        return load_reference_pipeline(args.model, device=_device(args.device))
    base = _load(args.model, _device(args.device), args.prediction_type)
    return load_tuned(args.tuned, base) if args.tuned else inflate(base)


def cmd_invert(args: argparse.Namespace) -> None:
    from .weights import read_metadata, save_latents

    v.check_output_file(args.out, exts=(".safetensors",), what="--out")
    _check_model(args), _check_video(args), _check_sampling(args), _check_prompts([args.prompt], "--prompt")
    if args.tuned:
        read_metadata(args.tuned)
    clip = _read_clip(args)
    pipe = _tuned_or_inflated(args)
    f, h, w = clip.frames.shape[:3]
    mp.check_pipeline_job(pipe, f, h, w, "invert")
    latents = pipe.encode_video(clip.frames)
    embeds = pipe.encode_prompt(args.prompt) if args.prompt else None
    inv = ddim.invert(
        pipe,
        latents,
        steps=args.inversion_steps,
        prompt_embeds=embeds,
        callback=_Bars().phase("invert"),
        windows=windows.from_cli(args),
    )
    save_latents(args.out, inv, {"fps": str(clip.fps), "steps": str(args.inversion_steps)})
    print(json.dumps({"out": str(args.out), "shape": list(inv.shape)}))


def cmd_sample(args: argparse.Namespace) -> None:
    from .weights import load_latents, read_metadata

    v.check_output_dir(args.out_dir, what="--out-dir")
    _check_model(args), _check_sampling(args), _check_prompts([*args.prompt, args.negative], "--prompt")
    if args.tuned:
        read_metadata(args.tuned)
    latents, meta = load_latents(args.latents) if args.latents else (None, {})
    if latents is None:
        defaults = {"frames": 24, "width": 512, "height": 512}
        for name, value in defaults.items():
            setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
        v.check_number("--frames", args.frames, 1, v.MAX_FRAMES, integer=True)
        _check_size(args.width, args.height)
        f, h, w = args.frames, args.height, args.width
    else:
        f, h, w = latents.shape[2], latents.shape[3] * 8, latents.shape[4] * 8
        _check_latents_size(args, f, w, h)
    check_job_size(f, h, w, kind="sample", device=args.device)
    pipe = _tuned_or_inflated(args)
    if latents is not None and latents.shape[1] != pipe.unet.config.in_channels:
        raise v.InputError(
            f"{args.latents} holds {latents.shape[1]}-channel latents but the model takes "
            f"{pipe.unet.config.in_channels}; invert with this model"
        )
    mp.check_pipeline_job(pipe, f, h, w, "sample")
    bars = _Bars()
    videos = []
    for i, text in enumerate(args.prompt):
        out = ddim.sample(
            pipe,
            pipe.encode_prompt(text),
            negative_embeds=pipe.encode_prompt(args.negative),
            latents=latents,
            frames=args.frames,
            height=args.height,
            width=args.width,
            steps=args.sample_steps,
            guidance_scale=args.cfg,
            eta=args.eta,
            seed=args.sample_seed,
            callback=bars.phase(f"sample:{i}"),
            windows=windows.from_cli(args),
        )
        videos.append(pipe.decode_latents(out))
    fps = args.fps or float(meta.get("fps", 8.0))
    print(json.dumps({"written": write_edits(args.out_dir, args.prompt, videos, fps)}))


def _check_latents_size(args: argparse.Namespace, frames: int, width: int, height: int) -> None:
    """Refuse --frames/--width/--height that contradict --latents (the latents fix the clip's length and
    size: honouring neither silently would hand back a different video than the one asked for)."""
    asked = {"--frames": (args.frames, frames), "--width": (args.width, width), "--height": (args.height, height)}
    wrong = [f"{flag} {mine}" for flag, (mine, theirs) in asked.items() if mine is not None and mine != theirs]
    if wrong:
        raise v.InputError(
            f"{', '.join(wrong)} contradict{'s' if len(wrong) == 1 else ''} --latents {args.latents}, which holds "
            f"{frames} frames at {width}x{height}: drop {' and '.join(w.split()[0] for w in wrong)} (the latents set "
            "the length and size) or invert the clip again at the size you want"
        )


def cmd_edit(args: argparse.Namespace) -> None:
    v.check_output_dir(args.out_dir, what="--out-dir")
    if args.save_tuned:
        v.check_output_file(args.save_tuned, exts=(".safetensors",), what="--save-tuned")
    _check_model(args), _check_video(args), _check_tune(args), _check_sampling(args)
    _check_prompts([args.prompt, *args.edit, args.negative], "--prompt/--edit")
    clip = _read_clip(args)
    pipe = _load(args.model, _device(args.device), args.prediction_type)
    f, h, w = clip.frames.shape[:3]
    tune_cfg = _tune_config(args)
    mp.check_pipeline_job(
        pipe, f, h, w, "tune", precision=tune_cfg.precision, checkpointing=tune_cfg.gradient_checkpointing
    )
    cfg = EditConfig(
        tune=tune_cfg,
        inversion_steps=args.inversion_steps,
        steps=args.sample_steps,
        guidance_scale=args.cfg,
        eta=args.eta,
        negative_prompt=args.negative,
        seed=args.sample_seed,
        norm=args.norm,
        attention=args.attention,
        windows=windows.from_cli(args),
    )
    t0 = time.time()
    result = tune_and_edit(pipe, clip.frames, args.prompt, args.edit, cfg, _Bars())
    if args.save_tuned:  # first: the tuned weights are the expensive part to lose
        from .weights import save_tuned

        save_tuned(args.save_tuned, result.pipeline)
    written = write_edits(args.out_dir, args.edit, result.videos, args.fps or clip.fps)
    print(json.dumps({"written": written, "seconds": round(time.time() - t0, 1)}))


def cmd_config(args: argparse.Namespace) -> None:
    from .reference_config import run_reference_config

    v.check_input_file(args.config, "config file")
    if args.output_dir:
        v.check_output_dir(args.output_dir, what="--output-dir")
    for kv in args.set:
        if "=" not in kv:
            raise v.InputError(f"--set {kv!r} needs KEY=VALUE, e.g. max_train_steps=2")
    bars, scores, on_edits = _Bars(), [], None
    if args.score_clip:
        from .clip_scoring import read_config
        from .score_files import score_written_edits

        read_config(args.score_clip)  # a wrong folder fails before tuning, not after

        def on_edits(prompts, videos, source, out_dir):  # noqa: ANN001, ANN202 - tav.reference_config.OnEdits
            written, found = score_written_edits(
                args.score_clip, prompts, videos, source, out_dir, _device(args.device), bars.phase("score")
            )
            scores.extend(found)
            return written

    written = run_reference_config(
        args.config,
        pretrained=args.pretrained,
        device=_device(args.device),
        video_dir=args.video_dir,
        output_dir=args.output_dir,
        overrides=dict(kv.split("=", 1) for kv in args.set),
        callback=bars,
        whole_clip_overlap=args.whole_clip_overlap,
        on_edits=on_edits,
    )
    print(json.dumps({"written": written, **({"scores": scores} if args.score_clip else {})}))


def cmd_plan(args: argparse.Namespace) -> None:
    v.check_number("--frames", args.frames, 1, v.MAX_FRAMES, integer=True)
    _check_size(args.width, args.height)
    if args.vram is not None:
        v.check_number("--vram", args.vram, 0.1, 10_000, hint="the device's memory in GiB, e.g. 12")
    configs = mp.read_configs(args.model)
    job = mp.Job(
        args.kind, args.frames, args.height, args.width, args.precision, args.checkpointing, args.sdpa, args.device
    )
    planner = mp.planner_for(configs)
    plan = planner.plan(job)
    print(f"model: {configs.name}")
    print(plan.table())
    if args.vram is None:
        return
    budget = int(args.vram * 2**30)
    fits = planner.largest_fitting(job, budget)
    verdict = "fits" if plan.total <= budget else "does NOT fit"
    print(f"{args.vram:g} GiB: this job {verdict}")
    frames = fits["frames"]
    print(f"  most frames at {job.width}x{job.height}: {frames if frames else 'none'}")
    size = fits["size"]
    print(f"  largest size at {job.frames} frames: {f'{size[0]}x{size[1]}' if size else 'none'}")


def cmd_score(args: argparse.Namespace) -> None:
    from . import metrics
    from .clip_scoring import load_clip, read_config
    from .score_files import read_frames, write_plot

    v.check_input_file(args.video, "video file")
    if args.source:
        v.check_input_file(args.source, "--source video file")
    if args.plot:
        v.check_output_file(args.plot, exts=(".png",), what="--plot")
    read_config(args.clip)
    v.check_number("--frames", args.frames, 0, v.MAX_FRAMES, integer=True, hint="0 = every frame")
    v.check_number("--start", args.start, 0, integer=True)
    v.check_number("--stride", args.stride, 1, 10_000, integer=True)
    v.check_number("--batch-size", args.batch_size, 1, 4096, integer=True)
    _check_prompts([args.prompt], "--prompt")
    device = _device(args.device)
    frames = read_frames(args.video, args.frames, args.start, args.stride)
    source = read_frames(args.source, args.frames, args.start, args.stride) if args.source else None
    metrics.check_inputs(frames, args.prompt, source)
    dtype = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    scores = metrics.score_edit(
        load_clip(args.clip, device, dtype),
        frames,
        args.prompt,
        source,
        batch_size=args.batch_size,
        callback=_Bars().phase("score"),
    )
    plot = write_plot(args.plot, scores) if args.plot else None
    _close_bars()
    if args.json:
        print(json.dumps({**scores.to_dict(), "plot": plot}))
    else:
        print(scores.summary() + (f"\nplot: {plot}" if plot else ""))


def cmd_demo(args: argparse.Namespace) -> None:
    from .shapes.demo import run_demo

    v.check_output_dir(args.out_dir, what="--out-dir")
    run_demo(args.out_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tav", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="tune + invert + edit a bundled shapes clip with the shipped toy model (CPU)")
    p.add_argument("--out-dir", default="outputs/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("tune", help="tune on one clip; writes the small tuned-weights .safetensors")
    _add_model(p), _add_video(p), _add_tune(p)
    p.add_argument("--prompt", required=True, help="caption of the source clip")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("invert", help="DDIM-invert a clip with a (tuned) model; writes the latent")
    _add_model(p), _add_video(p), _add_sampling(p)
    p.add_argument("--tuned", help="tuned weights from `tune` (default: untuned inflated model)")
    p.add_argument("--prompt", default="", help="invert with this prompt (default: empty, as the reference)")
    p.add_argument("--out", required=True, help="output .safetensors holding the inverted latent")
    windows.add_cli_options(p)
    p.set_defaults(func=cmd_invert)

    p = sub.add_parser("sample", help="sample edited videos from an inverted latent (or noise)")
    _add_model(p), _add_sampling(p)
    p.add_argument("--tuned", help="tuned weights from `tune`")
    p.add_argument("--latents", help="inverted latent from `invert` (default: random noise)")
    p.add_argument("--prompt", nargs="+", required=True, help="one or more edit prompts")
    p.add_argument("--frames", type=int, help="without --latents (default 24); with them, must match them")
    p.add_argument("--width", type=int, help="without --latents (default 512); with them, must match them")
    p.add_argument("--height", type=int, help="without --latents (default 512); with them, must match them")
    p.add_argument("--out-dir", required=True)
    windows.add_cli_options(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("edit", help="tune, invert and sample in one go")
    _add_model(p), _add_video(p), _add_tune(p), _add_sampling(p)
    p.add_argument("--prompt", required=True, help="caption of the source clip")
    p.add_argument("--edit", nargs="+", required=True, help="edited prompts")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--save-tuned", help="also write the tuned weights here")
    windows.add_cli_options(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("plan", help="peak memory of a tune/invert/sample job, and what fits (reads no weights)")
    p.add_argument("--model", help="diffusers folder (configs only) or .safetensors (header only); default SD1.5")
    p.add_argument("--kind", choices=("tune", "invert", "sample"), default="tune")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16", help="weights (and autocast)")
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True, help="tuning only")
    p.add_argument("--sdpa", choices=("flash", "math"), default="flash", help="attention kernel")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument(
        "--vram", type=float, help="device memory in GiB: also print the most frames / largest size that fit"
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("config", help="run an official Tune-A-Video YAML config unchanged")
    p.add_argument("config", help="e.g. official_examples/configs/man-skiing.yaml")
    p.add_argument("--pretrained", help="local model replacing pretrained_model_path")
    p.add_argument("--video-dir", help="where the config's data/*.mp4 live (default: next to the config)")
    p.add_argument("--output-dir", help="replaces output_dir")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override config values for smoke runs, e.g. max_train_steps=2 train_data.n_sample_frames=2",
    )
    p.add_argument(
        "--whole-clip-overlap",
        type=int,
        default=None,
        metavar="K",
        help="edit the whole source clip in windows of n_sample_frames overlapping by K (tuning stays on "
        "n_sample_frames frames, picked evenly)",
    )
    p.add_argument(
        "--score-clip",
        metavar="PATH",
        help="score every edit with this CLIPModel folder (frame consistency, text alignment, PickScore-style): "
        "writes samples/scores.json and a plot per edit",
    )
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("score", help="score an edited clip: CLIP frame consistency, text alignment, PickScore")
    p.add_argument("video", help="the edited clip (mp4/gif/webm ...)")
    p.add_argument("--clip", required=True, help="a transformers CLIPModel folder (e.g. clip-vit-large-patch14)")
    p.add_argument("--prompt", required=True, help="the edit prompt to score against")
    p.add_argument("--source", help="the source clip, same frames: scored too, and plotted beside the edit")
    p.add_argument("--plot", help="write the per-frame plot here (.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object (per-frame curves included)")
    p.add_argument("--frames", type=int, default=0, help="frames to score (default 0: every frame)")
    p.add_argument("--start", type=int, default=0, help="first frame index")
    p.add_argument("--stride", type=int, default=1, help="take every n-th frame")
    p.add_argument("--batch-size", type=int, default=16, help="frames per CLIP batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="CLIP weights: auto = bf16/fp16 on CUDA, fp32 elsewhere; fp32 is what LOVEU-TGVE's script ran",
    )
    p.set_defaults(func=cmd_score)
    return parser


_SIGINT_SEEN = False


def _on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C: remember it (a child process killed by the same signal may surface as another error)."""
    global _SIGINT_SEEN
    _SIGINT_SEEN = True
    raise KeyboardInterrupt


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    if issubclass(category, v.TavWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _ORIGINAL_SHOWWARNING(message, category, filename, lineno, file, line)


_ORIGINAL_SHOWWARNING = warnings.showwarning


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one subcommand; returns the exit status (0 ok, 2 bad input or failed write, 130 Ctrl-C)."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: keep the default handler
        previous = None
    warnings.showwarning = _show_warning
    try:
        return _run(argv)
    except KeyboardInterrupt:
        _close_bars()
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _close_bars()
        warnings.showwarning = _ORIGINAL_SHOWWARNING
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _run(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", v.TavWarning)
            args.func(args)
    except (ValueError, OSError) as e:  # InputError, NonFiniteError, CheckpointError, WriteError, missing files
        if _SIGINT_SEEN:
            raise KeyboardInterrupt from None
        _close_bars()
        for problem in getattr(e, "problems", None) or [e]:  # a config's schema problems: one line each
            print(f"error: {_one_line(problem)}", file=sys.stderr)
        return 2
    except torch.OutOfMemoryError:
        if _SIGINT_SEEN:
            raise KeyboardInterrupt from None
        _close_bars()
        print(
            "error: out of memory: lower --frames, --width/--height, or use a device with more memory",
            file=sys.stderr,
        )
        return 2
    except Exception:
        if _SIGINT_SEEN:  # a lazy import or a child process turned Ctrl-C into another error
            raise KeyboardInterrupt from None
        raise
    return 0


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split()) or type(e).__name__
