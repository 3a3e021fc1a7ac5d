"""Model nodes: load checkpoints, bridge stock MODEL/CLIP/VAE, inflate, save/load tuned weights."""

from __future__ import annotations

import os
from typing import Any, Optional

import folder_paths
import torch

from tav.pipeline import Pipeline

from . import memory
from .common import (
    CATEGORY,
    PIPELINE,
    PRECISIONS,
    TUNED_FOLDER,
    device,
    free_comfy_memory,
    load_dtype,
    log,
)
from .native import PREFIX, patched_weights

DIFFUSERS_PREFIX = "diffusers/"
CHECKPOINTS_PREFIX = "checkpoints/"
PREDICTION_TYPES = ["auto", "epsilon", "v_prediction"]


def diffusers_folders() -> dict[str, str]:
    """``{"diffusers/<name>": abs path}`` for every folder with a model_index.json under models/diffusers."""
    found: dict[str, str] = {}
    for root in folder_paths.get_folder_paths("diffusers"):
        if not os.path.isdir(root):
            continue
        for dirpath, dirs, files in os.walk(root, followlinks=True):
            if "model_index.json" in files:
                rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
                found.setdefault(DIFFUSERS_PREFIX + rel, dirpath)
                dirs.clear()  # a pipeline's sub-folders are not pipelines
    return found


def checkpoint_choices() -> list[str]:
    ckpts = [CHECKPOINTS_PREFIX + n for n in folder_paths.get_filename_list("checkpoints")]
    return sorted(diffusers_folders()) + ckpts


def resolve_checkpoint(name: str) -> Optional[str]:
    if name.startswith(DIFFUSERS_PREFIX):
        return diffusers_folders().get(name)
    if name.startswith(CHECKPOINTS_PREFIX):
        return folder_paths.get_full_path("checkpoints", name[len(CHECKPOINTS_PREFIX) :])
    return None


class TAV_LoadCheckpoint:
    """Load an SD 1.x/2.x model for Tune-A-Video from models/checkpoints or models/diffusers."""

    CATEGORY = f"{CATEGORY}/model"
    RETURN_TYPES = (PIPELINE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("The (2-D, not yet inflated) Stable Diffusion pipeline.",)
    FUNCTION = "load"
    DESCRIPTION = "Load a Stable Diffusion 1.x/2.x single-file checkpoint or diffusers folder, offline."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (
                    checkpoint_choices(),
                    {
                        "tooltip": (
                            "diffusers/<folder> from models/diffusers (e.g. diffusers/tav-shapes, the toy model) or "
                            "checkpoints/<file> from models/checkpoints (SD 1.x/2.x .safetensors)."
                        )
                    },
                ),
                "prediction_type": (
                    PREDICTION_TYPES,
                    {
                        "default": "auto",
                        "tooltip": (
                            "auto reads it from the model (v_prediction for SD 2.x 768-v); set it when a checkpoint is "
                            "detected wrongly."
                        ),
                    },
                ),
                "precision": (
                    PRECISIONS,
                    {"default": "auto", "tooltip": "Weight precision: auto = fp16 on a GPU, fp32 on the CPU."},
                ),
            }
        }

    def load(self, model: str, prediction_type: str, precision: str) -> tuple[Pipeline]:
        from tav import checkpoints

        path = resolve_checkpoint(model)
        if path is None:
            raise ValueError(f"model {model!r} not found in models/checkpoints or models/diffusers")
        with torch.inference_mode(False):  # normal tensors: tuning can then share them instead of copying
            pipe = checkpoints.load_pipeline(
                path,
                device=memory.offload_device(),  # ComfyUI's manager loads it where a node needs it
                dtype=load_dtype(precision, device()),
                prediction_type=None if prediction_type == "auto" else prediction_type,
            )
        return (pipe,)


class TAV_FromComfyModels:
    """Turn stock MODEL + CLIP + VAE (Load Checkpoint, LoRA loaders, DreamBooth models) into a pipeline."""

    CATEGORY = f"{CATEGORY}/model"
    RETURN_TYPES = (PIPELINE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("A Tune-A-Video pipeline with exactly the weights of the given models (LoRAs applied).",)
    FUNCTION = "convert"
    DESCRIPTION = "Bridge from ComfyUI's MODEL/CLIP/VAE (any SD 1.x/2.x checkpoint, LoRAs merged) to Tune-A-Video."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (
                    "MODEL",
                    {"tooltip": "A Stable Diffusion 1.x/2.x MODEL, e.g. from Load Checkpoint or a LoRA loader."},
                ),
                "clip": ("CLIP", {"tooltip": "The matching CLIP text encoder."}),
                "vae": ("VAE", {"tooltip": "The matching VAE."}),
                "precision": (
                    PRECISIONS,
                    {"default": "auto", "tooltip": "Weight precision: auto = fp16 on a GPU, fp32 on the CPU."},
                ),
            }
        }

    def convert(self, model: Any, clip: Any, vae: Any, precision: str) -> tuple[Pipeline]:
        import comfy.model_base
        import comfy.model_management as mm

        from tav import checkpoints

        model_type = model.model.model_type
        if model_type == comfy.model_base.ModelType.EPS:
            prediction = "epsilon"
        elif model_type == comfy.model_base.ModelType.V_PREDICTION:
            prediction = "v_prediction"
        else:
            raise ValueError(f"Tune-A-Video supports epsilon and v-prediction SD models, not {model_type.name}")
        # Loading puts this MODEL's own object patches on the module tree it shares with its clones (a
        # TAV-patched clone may hold it). LoRA and other weight patches live beside the base weights
        # (forcing them in fails under dynamic VRAM): compute the patched weights, then name them as a
        # single-file checkpoint does (what BaseModel.state_dict_for_saving wraps; its arguments changed
        # after 0.3.75, these model_config methods did not).
        mm.load_models_gpu([model, clip.load_model()])
        config = model.model.model_config
        sd = {
            **config.process_unet_state_dict_for_saving(patched_weights(model, PREFIX)),
            **config.process_clip_state_dict_for_saving(patched_weights(clip.patcher)),
            **config.process_vae_state_dict_for_saving(vae.get_sd()),
        }
        sd = {k: v for k, v in sd.items() if hasattr(v, "is_floating_point")}
        with torch.inference_mode(False):  # normal tensors: tuning can then share them instead of copying
            pipe = checkpoints.pipeline_from_ldm_state_dict(
                sd,
                device=memory.offload_device(),
                dtype=load_dtype(precision, device()),
                prediction_type=prediction,
                source=f"ComfyUI {type(model.model.model_config).__name__} model",
            )
        del sd
        free_comfy_memory()
        return (pipe,)


class TAV_Inflate:
    """Turn a 2-D pipeline into a video one: sparse-causal attention + temporal attention layers."""

    CATEGORY = f"{CATEGORY}/model"
    RETURN_TYPES = (PIPELINE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("The inflated pipeline (shares the input's weights; the input is not changed).",)
    FUNCTION = "inflate"
    DESCRIPTION = "Inflate the UNet: ST-Attn (frame 0 + previous frame keys) and zero-initialised temporal attention."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "pipeline": (PIPELINE, {"tooltip": "A 2-D pipeline from Load Checkpoint or From ComfyUI Models."}),
                "norm": (
                    ["video", "frame"],
                    {
                        "default": "video",
                        "tooltip": (
                            "video: GroupNorm statistics over all frames (the reference). frame: per-frame GroupNorm."
                        ),
                    },
                ),
                "attention": (
                    ["sparse_causal", "sparse_causal_self", "frame"],
                    {
                        "default": "sparse_causal",
                        "tooltip": (
                            "sparse_causal: each frame attends to frame 0 and the previous frame (the paper)."
                            " sparse_causal_self: frame 0, the previous frame and the frame itself."
                            " frame: no cross-frame attention (ablation)."
                        ),
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFF,
                        "control_after_generate": False,
                        "tooltip": "Seed for the random init of the new temporal layers.",
                    },
                ),
            }
        }

    def inflate(self, pipeline: Pipeline, norm: str, attention: str, seed: int) -> tuple[Pipeline]:
        from tav import inflation

        if inflation.is_inflated(pipeline):
            unet = pipeline.unet
            if (getattr(unet, "norm", norm), getattr(unet, "attention", attention)) != (norm, attention):
                raise ValueError(
                    f"the pipeline is already inflated with norm={unet.norm}, attention={unet.attention}; "
                    "connect the 2-D pipeline from the loader instead"
                )
            log.info("Tune-A-Video: pipeline already inflated, passing it through")
            return (pipeline,)
        return (inflation.inflate(pipeline, norm=norm, attention=attention, seed=seed),)


class TAV_SaveTuned:
    """Save the tuned weights (a few MB) into models/tuneavideo."""

    CATEGORY = f"{CATEGORY}/model"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("filename",)
    OUTPUT_TOOLTIPS = ("The file name inside models/tuneavideo (for Load Tuned).",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    DESCRIPTION = "Write only the tuned and temporal tensors as .safetensors, with the base model's fingerprint."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "pipeline": (PIPELINE, {"tooltip": "A tuned pipeline from Tune."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "tav_tuned",
                        "tooltip": "File name prefix inside models/tuneavideo; a counter is appended.",
                    },
                ),
            }
        }

    def save(self, pipeline: Pipeline, filename_prefix: str) -> dict:
        from tav import inflation, weights

        if not inflation.is_inflated(pipeline):
            raise ValueError("Save Tuned needs a tuned pipeline (from Tune or Load Tuned)")
        root = folder_paths.get_folder_paths(TUNED_FOLDER)[0]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, root)
        os.makedirs(folder, exist_ok=True)
        filename = f"{name}_{counter:05}_.safetensors"
        weights.save_tuned(os.path.join(folder, filename), pipeline)  # metadata from what Tune recorded
        rel = f"{subfolder}/{filename}" if subfolder else filename
        return {"ui": {"text": [rel]}, "result": (rel,)}


class TAV_LoadTuned:
    """Apply tuned weights from models/tuneavideo to the base pipeline they were tuned from."""

    CATEGORY = f"{CATEGORY}/model"
    RETURN_TYPES = (PIPELINE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("The tuned, inflated pipeline (the input is not changed).",)
    FUNCTION = "load"
    DESCRIPTION = "Load Tune-A-Video weights saved by Save Tuned onto the same base model."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "pipeline": (PIPELINE, {"tooltip": "The base pipeline the weights were tuned from (2-D or inflated)."}),
                "tuned_weights": (
                    folder_paths.get_filename_list(TUNED_FOLDER),
                    {"tooltip": "A .safetensors file from models/tuneavideo."},
                ),
                "check_base_model": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Refuse weights tuned on a different base model (recommended)."},
                ),
            }
        }

    def load(self, pipeline: Pipeline, tuned_weights: str, check_base_model: bool) -> tuple[Pipeline]:
        from tav import weights

        path = folder_paths.get_full_path(TUNED_FOLDER, tuned_weights)
        if path is None:
            raise ValueError(f"tuned weights {tuned_weights!r} not found in models/{TUNED_FOLDER}")
        with torch.inference_mode(False):
            return (weights.load_tuned(path, pipeline, check_base=check_base_model),)
