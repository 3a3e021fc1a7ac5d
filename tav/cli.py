"""``python -m tav``: tune, invert, sample, edit, run an official config, or the demo.

Every subcommand works offline on a local model (a diffusers folder or a single-file SD 1.x/2.x
checkpoint). Progress goes to tqdm; Ctrl-C stops cleanly between steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Optional

import torch

from . import ddim, windows
from .editing import EditConfig, tune_and_edit, write_edits
from .pipeline import Pipeline
from .tuning import DEFAULT_TRAINABLE, TuneConfig


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _load(model: str, device: torch.device, prediction_type: Optional[str]) -> Pipeline:
    from .checkpoints import load_pipeline

    dtype = torch.float16 if device.type == "cuda" else torch.float32  # frozen weights; tuning keeps fp32 masters
    return load_pipeline(model, device=device, dtype=dtype, prediction_type=prediction_type)


class _Bars:
    """Map the core's (phase, step, total) callback to one tqdm bar per phase."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm, self._bars = tqdm, {}

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
        choices=["video", "frame"],
        default="video",
        help="GroupNorm over all frames (reference) or per frame (better on the shapes model)",
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


def cmd_tune(args: argparse.Namespace) -> None:
    from .inflation import inflate
    from .tuning import tune
    from .weights import save_tuned

    clip = _read_clip(args)
    pipe = inflate(_load(args.model, _device(args.device), args.prediction_type), norm=args.norm)
    cfg = _tune_config(args)
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
    from .weights import save_latents

    pipe = _tuned_or_inflated(args)
    clip = _read_clip(args)
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
    from .weights import load_latents

    pipe = _tuned_or_inflated(args)
    latents, meta = load_latents(args.latents) if args.latents else (None, {})
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


def cmd_edit(args: argparse.Namespace) -> None:
    clip = _read_clip(args)
    pipe = _load(args.model, _device(args.device), args.prediction_type)
    cfg = EditConfig(
        tune=_tune_config(args),
        inversion_steps=args.inversion_steps,
        steps=args.sample_steps,
        guidance_scale=args.cfg,
        eta=args.eta,
        negative_prompt=args.negative,
        seed=args.sample_seed,
        norm=args.norm,
        windows=windows.from_cli(args),
    )
    t0 = time.time()
    result = tune_and_edit(pipe, clip.frames, args.prompt, args.edit, cfg, _Bars())
    written = write_edits(args.out_dir, args.edit, result.videos, args.fps or clip.fps)
    if args.save_tuned:
        from .weights import save_tuned

        save_tuned(args.save_tuned, result.pipeline)
    print(json.dumps({"written": written, "seconds": round(time.time() - t0, 1)}))


def cmd_config(args: argparse.Namespace) -> None:
    from .reference_config import run_reference_config

    written = run_reference_config(
        args.config,
        pretrained=args.pretrained,
        device=_device(args.device),
        video_dir=args.video_dir,
        output_dir=args.output_dir,
        overrides=dict(kv.split("=", 1) for kv in args.set),
        callback=_Bars(),
        whole_clip_overlap=args.whole_clip_overlap,
    )
    print(json.dumps({"written": written}))


def cmd_demo(args: argparse.Namespace) -> None:
    from .shapes.demo import run_demo

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
    p.add_argument("--frames", type=int, default=24, help="only without --latents")
    p.add_argument("--width", type=int, default=512, help="only without --latents")
    p.add_argument("--height", type=int, default=512, help="only without --latents")
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
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
