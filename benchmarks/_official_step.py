#!/usr/bin/env python
"""Child process for ``bench_steps.py``: the official Tune-A-Video code, one configuration.

Runs under the official venv (diffusers 0.11.1, transformers 4.26.1; see ``setup_official.sh``)
with ``--src`` pointing at a checkout holding the official ``tuneavideo/`` package. Nothing of the
official code is copied here: its UNet is built with ``UNet3DConditionModel.from_pretrained_2d``
exactly as ``train_tuneavideo.py`` does, and the step bodies below follow that script and
``TuneAVideoPipeline.__call__`` line by line (accelerate's wrappers are no-ops for one fp32
process: ``accelerator.backward`` is ``loss.backward``, ``clip_grad_norm_`` is torch's).

Phases:
- ``tune_full_gc``: VAE encode of the pixels + text encoder + UNet forward/backward + AdamW,
  gradient checkpointing on (the shipped configs);
- ``tune_unet_gc``: the same with latents/embedding computed once (to separate the UNet's cost);
- ``tune_full_nogc``: as shipped but gradient checkpointing off;
- ``sample``: one step of the pipeline's denoising loop (CFG on a batch of 2 videos + DDIM).

``--equiv FILE`` instead loads a full state dict saved by our side, runs the official UNet on
the same inputs and reports the largest difference to our output.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import warnings
from pathlib import Path

import _procmem

warnings.filterwarnings("ignore")


def _import_official(src: str):  # noqa: ANN202
    sys.path.insert(0, src)
    from tuneavideo.models.unet import UNet3DConditionModel

    return UNet3DConditionModel


def _build(spec: dict, src: str):  # noqa: ANN202
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    UNet3DConditionModel = _import_official(src)
    if len(spec["unet"]["block_out_channels"]) != 4:
        raise SystemExit("the official from_pretrained_2d hard-codes 4 UNet blocks")
    torch.manual_seed(spec["seed"])
    unet = UNet3DConditionModel.from_pretrained_2d(spec["model_dir"], subfolder="unet")
    vae = AutoencoderKL(**spec["vae"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"]))
    tokenizer = CLIPTokenizer.from_pretrained(spec["tokenizer"])
    return unet, vae, text_encoder, tokenizer


def run_phases(spec: dict, src: str, frames: int, warmup: int, repeats: int, phases: list[str]) -> dict:
    import torch
    import torch.nn.functional as F
    from diffusers import DDIMScheduler, DDPMScheduler
    from diffusers.optimization import get_scheduler
    from einops import rearrange

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    unet, vae, text_encoder, tokenizer = _build(spec, src)
    sched_cfg = {k: v for k, v in spec["scheduler"].items() if not k.startswith("_")}
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=sched_cfg["num_train_timesteps"],
        beta_start=sched_cfg["beta_start"],
        beta_end=sched_cfg["beta_end"],
        beta_schedule=sched_cfg["beta_schedule"],
    )
    # train_tuneavideo.py: freeze VAE, text encoder, UNet; unfreeze modules ending in trainable_modules
    trainable_modules = ("attn1.to_q", "attn2.to_q", "attn_temp")
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    gen = torch.Generator().manual_seed(spec["seed"])
    px = spec["pixels"]
    pixel_values = torch.rand(1, frames, 3, px, px, generator=gen) * 2 - 1  # dataset: (b, f, c, h, w) in -1..1
    prompt_ids = tokenizer(
        spec["prompt"],
        max_length=tokenizer.model_max_length,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    ).input_ids

    out: dict = {"impl": "official", "frames": frames, "threads": torch.get_num_threads(), "phases": {}}
    for phase in phases:
        gc.collect()
        times: list[float] = []
        cpu: list[float] = []
        info: dict = {}
        if phase == "sample":
            unet.eval()
            scheduler = DDIMScheduler(
                **{
                    k: sched_cfg[k]
                    for k in (
                        "num_train_timesteps",
                        "beta_start",
                        "beta_end",
                        "beta_schedule",
                        "clip_sample",
                        "set_alpha_to_one",
                        "steps_offset",
                    )
                }
            )
            scheduler.set_timesteps(50)
            with torch.no_grad():  # TuneAVideoPipeline.__call__ is @torch.no_grad()
                uncond_ids = tokenizer(
                    [""], max_length=tokenizer.model_max_length, padding="max_length", return_tensors="pt"
                ).input_ids
                text_embeddings = torch.cat([text_encoder(uncond_ids)[0], text_encoder(prompt_ids)[0]])
            h = spec["latent"]
            latents = torch.randn(1, 4, frames, h, h, generator=gen) * scheduler.init_noise_sigma
            with _procmem.PeakMeter() as mem, torch.no_grad():
                for i in range(warmup + repeats):
                    t = scheduler.timesteps[i % len(scheduler.timesteps)]
                    t0, c0 = time.perf_counter(), time.process_time()
                    latent_model_input = torch.cat([latents] * 2)
                    latent_model_input = scheduler.scale_model_input(latent_model_input, t)
                    noise_pred = unet(latent_model_input, t, encoder_hidden_states=text_embeddings).sample.to(
                        dtype=latents.dtype
                    )
                    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
                    noise_pred = noise_pred_uncond + 12.5 * (noise_pred_text - noise_pred_uncond)
                    latents = scheduler.step(noise_pred, t, latents).prev_sample
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
        elif phase in ("tune_full_gc", "tune_unet_gc", "tune_full_nogc"):
            full = phase != "tune_unet_gc"
            unet.requires_grad_(False)
            for name, module in unet.named_modules():
                if name.endswith(trainable_modules):
                    for params in module.parameters():
                        params.requires_grad = True
            trainable = [p for p in unet.parameters() if p.requires_grad]
            if phase.endswith("_gc"):
                unet.enable_gradient_checkpointing()
            else:
                unet.disable_gradient_checkpointing()
            optimizer = torch.optim.AdamW(unet.parameters(), lr=3e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
            lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=500)
            unet.train()
            if not full:  # precomputed once (what tav does), for the UNet-only comparison
                with torch.no_grad():
                    pre_latents = (
                        rearrange(
                            vae.encode(rearrange(pixel_values, "b f c h w -> (b f) c h w")).latent_dist.sample(),
                            "(b f) c h w -> b c f h w",
                            f=frames,
                        )
                        * 0.18215
                    )
                    pre_ehs = text_encoder(prompt_ids)[0]
            no_grad_counts = []
            with _procmem.PeakMeter() as mem:
                for _ in range(warmup + repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    if full:
                        # Convert videos to latent space
                        video_length = pixel_values.shape[1]
                        pv = rearrange(pixel_values, "b f c h w -> (b f) c h w")
                        latents = vae.encode(pv).latent_dist.sample()
                        latents = rearrange(latents, "(b f) c h w -> b c f h w", f=video_length)
                        latents = latents * 0.18215
                    else:
                        latents = pre_latents
                    noise = torch.randn_like(latents)
                    bsz = latents.shape[0]
                    timesteps = torch.randint(
                        0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device
                    )
                    timesteps = timesteps.long()
                    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                    encoder_hidden_states = text_encoder(prompt_ids)[0] if full else pre_ehs
                    target = noise
                    model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
                    loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
                    _ = loss.item()
                    loss.backward()
                    no_grad_counts.append(sum(1 for p in trainable if p.grad is None))
                    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad()
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
            unet.eval()
            unet.disable_gradient_checkpointing()
            info = {
                "trainable_tensors": len(trainable),
                "trainable_params": sum(p.numel() for p in trainable),
                "trainable_tensors_without_grad": max(no_grad_counts) if no_grad_counts else 0,
            }
            del optimizer, lr_scheduler
            unet.zero_grad(set_to_none=True)
        else:
            raise ValueError(f"unknown phase {phase!r} for the official code")
        out["phases"][phase] = {
            "times": times[warmup:],
            "warmup_times": times[:warmup],
            "cpu_times": cpu[warmup:],
            **mem.as_dict(),
            **info,
        }
    return out


def run_equiv(spec: dict, src: str, path: str) -> dict:
    import torch

    UNet3DConditionModel = _import_official(src)
    data = torch.load(path, weights_only=True)
    unet = UNet3DConditionModel.from_pretrained_2d(spec["model_dir"], subfolder="unet")
    missing, unexpected = unet.load_state_dict(data["state_dict"], strict=False)
    unet.eval()
    report: dict = {"missing_keys": list(missing), "unexpected_keys": list(unexpected), "results": {}}
    for dtype_name, ours in data["out"].items():
        dtype = ours.dtype  # float32, float64, or a float64 negative control
        unet.to(dtype)
        with torch.no_grad():
            ref = unet(data["sample"].to(dtype), data["timestep"], data["ehs"].to(dtype)).sample
        diff = (ref - ours).abs()
        per_frame = diff.amax(dim=(0, 1, 3, 4)).tolist()
        report["results"][dtype_name] = {
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "max_abs_out": float(ref.abs().max()),
            "max_abs_diff_per_frame": per_frame,
            "shape": list(ref.shape),
        }
    return report


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True, help="folder holding the official tuneavideo/ package")
    p.add_argument("--spec", required=True)
    p.add_argument("--frames", type=int)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--phases", default="sample,tune_full_gc,tune_unet_gc,tune_full_nogc")
    p.add_argument("--equiv", help="compare against our output saved in this file instead of timing")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    if args.equiv:
        res = run_equiv(spec, args.src, args.equiv)
    else:
        res = run_phases(spec, args.src, args.frames, args.warmup, args.repeats, args.phases.split(","))
    Path(args.out).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
