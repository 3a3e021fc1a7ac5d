"""Score Edit: the paper's and LOVEU-TGVE's CLIP scores of an edited clip, with a per-frame plot.

The CLIP model is a transformers ``CLIPModel`` folder in ``models/clip_scoring`` (e.g. a local copy of
openai/clip-vit-large-patch14, or PickScore_v1): the stock CLIP loaders give a text encoder or an
image tower alone, and the scores need both towers of one model. A stock CLIP_VISION may replace
the image tower for frame consistency only.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import comfy.model_management as mm
import folder_paths
import numpy as np
import torch
from comfy_api.v0_0_2 import io

from tav import clip_scoring, metrics
from tav.score_plot import plot

from . import files, memory
from .common import CATEGORY, check, device, first_error, load_dtype, number_error, progress, tav_warnings

CLIP_FOLDER = "clip_scoring"
CONFIG = "config.json"


def register_clip_folder() -> None:
    """Register ``models/clip_scoring`` (keeping paths an extra_model_paths.yaml already gave it)."""
    default = os.path.join(folder_paths.models_dir, CLIP_FOLDER)
    if CLIP_FOLDER in folder_paths.folder_names_and_paths:
        paths, exts = folder_paths.folder_names_and_paths[CLIP_FOLDER]
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[CLIP_FOLDER] = (paths, exts)
    else:
        folder_paths.folder_names_and_paths[CLIP_FOLDER] = ([default], set())


def clip_folders() -> list[str]:
    """Folders under models/clip_scoring holding a usable CLIPModel (config.json + safetensors), inside ComfyUI's
    folders after symlinks."""
    found: set[str] = set()
    roots = files.model_roots(CLIP_FOLDER)
    for base in folder_paths.get_folder_paths(CLIP_FOLDER):
        if not os.path.isdir(base):
            continue
        for folder, names in files.walk_confined(base, roots):
            if CONFIG in names and folder != base and check(clip_scoring.read_config, folder) is None:
                found.add(os.path.relpath(folder, base).replace(os.sep, "/"))
    return sorted(found)


def clip_folder(name: str) -> str:
    """The real path of folder ``name`` in models/clip_scoring; one refusal, whether or not it exists, for the rest."""
    roots = files.model_roots(CLIP_FOLDER)
    for base in folder_paths.get_folder_paths(CLIP_FOLDER):
        real = files.real_path(base, name)
        if real is not None and files.is_inside(real, roots) and os.path.isdir(real) and real not in roots:
            return real
    raise ValueError(
        f"clip_model {name!r} is not a folder in models/{CLIP_FOLDER} (folders that lead outside ComfyUI's "
        f"{CLIP_FOLDER} folders, also through symlinks, are refused): put a transformers CLIPModel folder there "
        "and pick it from the list"
    )


class TAV_ScoreEdit(io.ComfyNode):
    """Frame consistency, text alignment and PickScore of an edit (the paper's Tab. 1 / LOVEU-TGVE metrics)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_ScoreEdit",
            display_name="Score Edit (Tune-A-Video)",
            category=f"{CATEGORY}/metrics",
            description="Score an edited clip as the Tune-A-Video paper and the LOVEU-TGVE benchmark do, with a "
            "CLIPModel folder from models/clip_scoring.",
            inputs=[
                io.Image.Input("edited", tooltip="The edited frames (e.g. Sample Video's output or Load Video)."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The edit prompt."),
                io.Combo.Input(
                    "clip_model",
                    options=clip_folders(),
                    tooltip="A transformers CLIPModel folder in models/clip_scoring (config.json + model.safetensors): "
                    "clip-vit-large-patch14 for the benchmark's CLIP scores, PickScore_v1 for PickScore.",
                ),
                io.Int.Input("batch_size", default=16, min=1, max=256, tooltip="Frames per CLIP batch."),
                io.Image.Input(
                    "source", optional=True, tooltip="The source frames the edit was made from (same count)."
                ),
                io.ClipVision.Input(
                    "clip_vision",
                    optional=True,
                    tooltip="A stock CLIP Vision model: used for frame consistency instead of clip_model's image "
                    "tower (text alignment and PickScore still use clip_model).",
                ),
            ],
            outputs=[
                io.Float.Output(
                    "frame_consistency",
                    display_name="frame_consistency",
                    tooltip="Mean CLIP cosine over all pairs of frames (the paper's and LOVEU-TGVE's frame "
                    "consistency; x100 in Tab. 1).",
                ),
                io.Float.Output(
                    "frame_consistency_consecutive",
                    display_name="frame_consistency_consecutive",
                    tooltip="Mean CLIP cosine of consecutive frames (what later papers call CLIP-Image).",
                ),
                io.Float.Output(
                    "text_alignment",
                    display_name="text_alignment",
                    tooltip="Mean CLIP cosine of each frame with the prompt (x100 = the paper's textual "
                    "faithfulness with CLIP ViT-L/14).",
                ),
                io.Float.Output(
                    "pickscore",
                    display_name="pickscore",
                    tooltip="Mean of logit_scale x cosine per frame: PickScore with the PickScore_v1 model, else "
                    "that CLIP's scaled score.",
                ),
                io.String.Output(
                    "summary", display_name="summary", tooltip="The numbers as text (with the source's when given)."
                ),
                io.Image.Output(
                    "plot",
                    display_name="plot",
                    tooltip="Per-frame alignment and consecutive-frame consistency, edit vs source.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, clip_model: Optional[str] = None, batch_size: Optional[int] = None) -> bool | str:
        def folder_error() -> Optional[str]:
            if clip_model is None:
                return None
            return check(lambda: clip_scoring.read_config(clip_folder(clip_model)))

        return first_error(number_error("batch_size", batch_size, 1, 256, integer=True), folder_error())

    @classmethod
    def execute(
        cls,
        edited: torch.Tensor,
        prompt: str,
        clip_model: str,
        batch_size: int,
        source: Optional[torch.Tensor] = None,
        clip_vision: Any = None,
    ) -> io.NodeOutput:
        metrics.check_inputs(edited, prompt, source)
        path = clip_folder(clip_model)
        callback = progress("score")
        with tav_warnings() as warned:
            clip = clip_scoring.load_clip(path, memory.offload_device(), load_dtype("auto", device()))
            patcher = memory.patcher_for(clip, {"clip": clip.model})
            mm.load_models_gpu([patcher], force_full_load=True)
            try:
                scores = metrics.score_edit(
                    clip,
                    edited,
                    prompt,
                    source,
                    batch_size=int(batch_size),
                    callback=callback,
                    consistency_embedder=metrics.batched(
                        lambda f: clip_vision.encode_image(f, crop=True).image_embeds, int(batch_size)
                    )
                    if clip_vision
                    else None,
                    consistency_model="CLIP_VISION input" if clip_vision else None,
                )
            finally:
                memory.unload(patcher)  # scoring is occasional: give the memory back at once
        image = torch.from_numpy(plot(scores).astype(np.float32) / 255.0)[None]
        e, text = scores.edit, scores.summary()
        ui = {"text": [*(f"warning: {m}" for m in warned), text], "tav_scores": [scores.to_dict()]}
        result = (e.frame_consistency, e.frame_consistency_consecutive, e.text_alignment, e.pickscore, text, image)
        return io.NodeOutput(*result, ui=ui)
