"""Tune: one-shot fine-tuning of the inflated model on one clip, plus a loss-curve image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from comfy_api.v0_0_2 import io
from PIL import Image, ImageDraw

from tav.pipeline import Pipeline

from . import memory
from .common import (
    CATEGORY,
    PIPELINE,
    PRECISIONS,
    check_choice,
    check_interrupt,
    check_job,
    first_error,
    log,
    number_error,
    precision_input,
    progress,
    seed_input,
    tav_warnings,
    with_ui,
)

DEFAULT_MODULES = "attn1.to_q, attn2.to_q, attn_temp"


def parse_modules(text: str) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in text.replace("\n", ",").split(",") if m.strip())
    if not mods:
        raise ValueError("trainable_modules is empty: list module-name suffixes such as " + DEFAULT_MODULES)
    return mods


def loss_curve_image(losses: Sequence[float], width: int = 512, height: int = 256) -> torch.Tensor:
    """Plot the per-step loss (grey) and its running mean (blue) as an IMAGE ``[1, H, W, 3]``."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 48, width - 10, 22, height - 22
    d.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    vals = [v for v in losses if math.isfinite(v)]
    title = f"tuning loss: {len(losses)} steps"
    if vals:
        title += f", last {losses[-1]:.4f}, min {min(vals):.4f}"
    d.text((left, 4), title, fill=(0, 0, 0))
    if vals:
        lo, hi = min(vals), max(vals)
        hi = hi if hi > lo else lo + 1e-6
        d.text((2, top), f"{hi:.3g}", fill=(0, 0, 0))
        d.text((2, bottom - 10), f"{lo:.3g}", fill=(0, 0, 0))
        d.text((left, bottom + 4), "1", fill=(0, 0, 0))
        d.text((right - 30, bottom + 4), str(len(losses)), fill=(0, 0, 0))
        n = len(losses)

        def xy(i: int, v: float) -> tuple[float, float]:
            x = left + (right - left) * (i / max(1, n - 1))
            y = bottom - (bottom - top) * ((v - lo) / (hi - lo))
            return x, y

        raw = [xy(i, v) for i, v in enumerate(losses) if math.isfinite(v)]
        ema, smooth = None, []
        for i, v in enumerate(losses):
            if math.isfinite(v):
                ema = v if ema is None else 0.9 * ema + 0.1 * v
                smooth.append(xy(i, ema))
        if len(raw) > 1:
            d.line(raw, fill=(170, 170, 170), width=1)
            d.line(smooth, fill=(30, 90, 200), width=2)
        else:
            x, y = raw[0]
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 90, 200))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).unsqueeze(0)


class TAV_Tune(io.ComfyNode):
    """Fine-tune the query projections and temporal attention on one clip (the paper: 500 steps, lr 3e-5)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_Tune",
            display_name="Tune on Video (Tune-A-Video)",
            category=f"{CATEGORY}/tuning",
            description="One-shot tuning: learn the clip's motion. Re-runs only when its inputs change.",
            inputs=[
                PIPELINE.Input(
                    "pipeline", tooltip="An inflated pipeline (a 2-D one is inflated with default settings)."
                ),
                io.Image.Input(
                    "frames",
                    tooltip="The clip to learn, e.g. from Load Video; width and height must be multiples of 8.",
                ),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="a man is skiing",
                    tooltip="A caption of the clip (the source prompt).",
                ),
                io.Int.Input("steps", default=500, min=1, max=100000, tooltip="Optimisation steps (the paper: 500)."),
                io.Float.Input(
                    "learning_rate",
                    default=3e-5,
                    min=1e-8,
                    max=1e-2,
                    step=1e-6,
                    round=False,
                    tooltip="AdamW learning rate (the paper: 3e-5).",
                ),
                seed_input("Seed for the noise and timesteps drawn during tuning.", default=33),
                io.String.Input(
                    "trainable_modules",
                    default=DEFAULT_MODULES,
                    tooltip="Comma-separated module-name suffixes to train (the paper: attn1.to_q, attn2.to_q, "
                    "attn_temp). Everything else stays frozen.",
                ),
                precision_input(
                    "auto: fp32 on the CPU; on a GPU, bf16 (or fp16) autocast with fp32 trainable weights."
                ),
                io.Boolean.Input(
                    "gradient_checkpointing",
                    default=True,
                    tooltip="Trade compute for memory (recommended on GPUs with little memory).",
                ),
            ],
            outputs=[
                PIPELINE.Output(
                    "tuned_pipeline",
                    display_name="tuned_pipeline",
                    tooltip="A new pipeline with the tuned weights; it shares the frozen weights with the input, "
                    "which is not changed.",
                ),
                io.Image.Output(
                    "loss_curve",
                    display_name="loss_curve",
                    tooltip="The training loss per step (grey) and its running mean (blue).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(
        cls, trainable_modules: Optional[str] = None, learning_rate: Optional[float] = None
    ) -> bool | str:
        if trainable_modules is not None and not parse_modules_safe(trainable_modules):
            return "trainable_modules is empty: list module-name suffixes such as " + DEFAULT_MODULES
        return first_error(number_error("learning_rate", learning_rate, 1e-8, 1e-2))

    @classmethod
    def execute(
        cls,
        pipeline: Pipeline,
        frames: torch.Tensor,
        prompt: str,
        steps: int,
        learning_rate: float,
        seed: int,
        trainable_modules: str,
        precision: str,
        gradient_checkpointing: bool,
    ) -> io.NodeOutput:
        from tav import inflation, tuning

        check_choice("precision", precision, PRECISIONS)
        check_interrupt()
        if not inflation.is_inflated(pipeline):
            log.info("Tune-A-Video: inflating the 2-D pipeline with default settings before tuning")
            pipeline = inflation.inflate(pipeline)
        frames = frames[..., :3]
        check_job(pipeline, *frames.shape[:3], "tune", precision=precision, checkpointing=gradient_checkpointing)
        config = tuning.TuneConfig(
            steps=steps,
            lr=learning_rate,
            seed=seed,
            trainable_modules=parse_modules(trainable_modules),
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
        )
        with memory.on_device(pipeline) as output:
            with tav_warnings() as warned:
                latents = pipeline.encode_video(frames, callback=progress("encode"))
                embeds = pipeline.encode_prompt(prompt)
            result = tuning.tune(pipeline, latents, embeds, config, callback=progress("tune"), prompt=prompt)
            output(result.pipeline)
        return with_ui((result.pipeline, loss_curve_image(result.losses)), warned)


def parse_modules_safe(text: str) -> tuple[str, ...]:
    try:
        return parse_modules(text)
    except ValueError:
        return ()
