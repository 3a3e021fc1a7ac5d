"""DDIM Invert and Sample: invert the clip once, then render edited prompts from that noise."""

from __future__ import annotations

from typing import Any, Optional

import torch
from comfy_api.v0_0_2 import io

from tav.pipeline import Pipeline

from . import memory
from .common import (
    CATEGORY,
    CONTROL,
    INVERTED,
    PIPELINE,
    check_interrupt,
    check_job,
    conditioning_embeds,
    first_error,
    log,
    number_error,
    progress,
    seed_input,
    side_input,
    size_error,
    tav_warnings,
    with_ui,
)
from .windows import describe, sample_windows, window_error, window_inputs, windows_from_widgets


def _fingerprint(pipe: Pipeline) -> str:
    return pipe.base_fingerprint or ""


class TAV_DDIMInvert(io.ComfyNode):
    """DDIM-invert the clip to noise with the (tuned) model; run once per tuned model and reuse."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_DDIMInvert",
            display_name="DDIM Invert (Tune-A-Video)",
            category=f"{CATEGORY}/sampling",
            description="DDIM inversion (the reference: empty prompt, 50 steps). Changing only Sample's prompt "
            "reuses it.",
            inputs=[
                PIPELINE.Input("pipeline", tooltip="The tuned pipeline from Tune or Load Tuned."),
                io.Image.Input("frames", tooltip="The same clip that was tuned on."),
                io.Int.Input(
                    "steps",
                    default=50,
                    min=1,
                    max=1000,
                    tooltip="DDIM steps; use the same number in Sample (the paper: 50).",
                ),
                io.String.Input(
                    "prompt",
                    optional=True,
                    default="",
                    multiline=True,
                    tooltip="Prompt to invert with; empty = unconditional, as the reference.",
                ),
                *window_inputs(),
            ],
            outputs=[
                INVERTED.Output(
                    "inverted",
                    display_name="inverted",
                    tooltip="The clip's latents inverted to noise; feed it to Sample to keep the clip's structure and "
                    "motion.",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, window: Optional[int] = None, overlap: Optional[int] = None) -> bool | str:
        return first_error(window_error(window, overlap))

    @classmethod
    def execute(
        cls,
        pipeline: Pipeline,
        frames: torch.Tensor,
        steps: int,
        prompt: str = "",
        window: int = 0,
        overlap: int = 2,
        anchor_first_frame: bool = True,
    ) -> io.NodeOutput:
        from tav import ddim, inflation

        check_interrupt()
        if not inflation.is_inflated(pipeline):
            raise ValueError("DDIM Invert needs an inflated (tuned) pipeline: connect Tune or Load Tuned")
        frames = frames[..., :3]
        windows = windows_from_widgets(window, overlap, anchor_first_frame)
        f, h, w = frames.shape[:3]
        check_job(pipeline, min(f, windows.length) if windows else f, h, w, "invert")  # memory is one window's
        with memory.on_device(pipeline), tav_warnings() as warned:
            latents = pipeline.encode_video(frames, callback=progress("encode"))
            embeds = pipeline.encode_prompt(prompt) if prompt.strip() else None
            noise = ddim.invert(
                pipeline, latents, steps=steps, prompt_embeds=embeds, callback=progress("invert"), windows=windows
            )
        f, h, w, _ = frames.shape
        out = {
            "latents": noise.detach().to("cpu", torch.float32),
            "steps": int(steps),
            "fingerprint": _fingerprint(pipeline),
            "frames": int(f),
            "height": int(h),
            "width": int(w),
            "windows": describe(windows),
        }
        return with_ui((out,), warned)


class TAV_Sample(io.ComfyNode):
    """Render an edited prompt with the tuned video model (DDIM + classifier-free guidance)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_Sample",
            display_name="Sample Video (Tune-A-Video)",
            category=f"{CATEGORY}/sampling",
            description="DDIM sampling from the inverted clip (or random noise) with an edited prompt.",
            inputs=[
                PIPELINE.Input("pipeline", tooltip="The tuned pipeline."),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="spider man is skiing on the beach, cartoon style",
                    tooltip="The edit prompt. Ignored when a positive CONDITIONING is connected.",
                ),
                io.String.Input(
                    "negative_prompt",
                    multiline=True,
                    default="",
                    tooltip="What to steer away from (empty = the unconditional prompt, as the paper). Ignored when a "
                    "negative CONDITIONING is connected.",
                ),
                io.Int.Input(
                    "steps", default=50, min=1, max=1000, tooltip="DDIM steps (the paper: 50; match DDIM Invert)."
                ),
                io.Float.Input(
                    "cfg",
                    default=12.5,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Classifier-free guidance scale (the paper: 12.5); 1 disables guidance.",
                ),
                io.Float.Input(
                    "eta",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="DDIM eta: 0 is deterministic (the paper); 1 adds fresh noise each step like DDPM.",
                ),
                seed_input(
                    "Seed for the starting noise (without inverted latents) and for eta > 0.",
                    control_after_generate=None,
                ),
                io.Int.Input(
                    "frames", default=24, min=1, max=1024, tooltip="Frame count when no inverted latents are connected."
                ),
                side_input("width", "Width when no inverted latents are connected (a multiple of 8)."),
                side_input("height", "Height when no inverted latents are connected (a multiple of 8)."),
                INVERTED.Input(
                    "inverted",
                    optional=True,
                    tooltip="Start from the DDIM-inverted clip (recommended: keeps its motion and layout).",
                ),
                io.Conditioning.Input(
                    "positive",
                    optional=True,
                    tooltip="Stock conditioning (e.g. CLIP Text Encode with the same CLIP) used instead of the prompt "
                    "text.",
                ),
                io.Conditioning.Input(
                    "negative",
                    optional=True,
                    tooltip="Stock negative conditioning used instead of negative_prompt.",
                ),
                CONTROL.Input(
                    "control", optional=True, tooltip="Per-frame ControlNet from the Tune-A-Video ControlNet node."
                ),
                *window_inputs(),
            ],
            outputs=[
                io.Image.Output(
                    "frames_out",
                    display_name="frames",
                    tooltip="The generated frames as an IMAGE batch [frames, height, width, 3].",
                ),
                io.Latent.Output(
                    "latent",
                    display_name="latent",
                    tooltip="The frames' latents as a stock LATENT (a batch of frames, unscaled, for ComfyUI's VAE "
                    "nodes).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        width: Optional[int] = None,
        height: Optional[int] = None,
        cfg: Optional[float] = None,
        eta: Optional[float] = None,
        window: Optional[int] = None,
        overlap: Optional[int] = None,
    ) -> bool | str:
        # cfg/eta are named so that NaN/inf (which pass ComfyUI's min/max comparisons) are refused here
        return first_error(
            size_error(width, height),
            number_error("cfg", cfg, 0.0, 100.0),
            number_error("eta", eta, 0.0, 1.0),
            window_error(window, overlap),
        )

    @classmethod
    def execute(
        cls,
        pipeline: Pipeline,
        prompt: str,
        negative_prompt: str,
        steps: int,
        cfg: float,
        eta: float,
        seed: int,
        frames: int,
        width: int,
        height: int,
        inverted: Optional[dict] = None,
        positive: Any = None,
        negative: Any = None,
        control: Any = None,
        window: int = 0,
        overlap: int = 2,
        anchor_first_frame: bool = True,
    ) -> io.NodeOutput:
        from tav import ddim, inflation
        from tav.control import check_hint_frames

        check_interrupt()
        if not inflation.is_inflated(pipeline):
            raise ValueError("Sample needs an inflated (tuned) pipeline: connect Tune, Load Tuned or Inflate")
        windows = sample_windows(window, overlap, anchor_first_frame, inverted)
        if inverted is not None:
            _, _, f, h, w = inverted["latents"].shape
            h, w = h * pipeline.latent_factor, w * pipeline.latent_factor
        else:
            f, h, w = frames, height, width
        if control is not None:
            check_hint_frames(control, f)
        check_job(pipeline, min(f, windows.length) if windows else f, h, w, "sample")  # memory is one window's
        with memory.on_device(pipeline, control):
            dev = pipeline.device
            with tav_warnings() as warned:
                cond = conditioning_embeds(positive) if positive is not None else pipeline.encode_prompt(prompt)
                neg = None
                if negative is not None:
                    neg = conditioning_embeds(negative)
                elif negative_prompt.strip():
                    neg = pipeline.encode_prompt(negative_prompt)
            dtype = next(pipeline.text_encoder.parameters()).dtype
            cond = cond.to(dev, dtype)
            neg = neg.to(dev, dtype) if neg is not None else None
            init = None
            if inverted is not None:
                init = inverted["latents"]
                if inverted.get("fingerprint") and inverted["fingerprint"] != _fingerprint(pipeline):
                    log.warning("Tune-A-Video: the inverted latents come from a different base model")
                if inverted.get("steps") and inverted["steps"] != steps:
                    log.info("Tune-A-Video: inverted with %s steps, sampling with %s", inverted["steps"], steps)
            latents = ddim.sample(
                pipeline,
                cond,
                negative_embeds=neg,
                latents=init,
                frames=frames,
                height=height,
                width=width,
                steps=steps,
                guidance_scale=cfg,
                eta=eta,
                seed=seed,
                callback=progress("sample"),
                control=control,
                windows=windows,
            )
            images = pipeline.decode_latents(latents, callback=progress("decode"))
            stock = latents[0].permute(1, 0, 2, 3).to("cpu", torch.float32) / pipeline.vae_scale
            return with_ui((images, {"samples": stock.contiguous()}), warned)
