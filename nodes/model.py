"""Model nodes: load checkpoints, bridge stock MODEL/CLIP/VAE, inflate, save/load tuned weights."""

from __future__ import annotations

import os
from typing import Any, Optional

import folder_paths
import torch
from comfy_api.v0_0_2 import io

from tav.pipeline import Pipeline

from . import files, memory
from .common import (
    CATEGORY,
    PIPELINE,
    PRECISIONS,
    TUNED_FOLDER,
    check_choice,
    device,
    free_comfy_memory,
    load_dtype,
    log,
    precision_input,
    seed_input,
)
from .native import PREFIX, patched_weights

DIFFUSERS_PREFIX = "diffusers/"
CHECKPOINTS_PREFIX = "checkpoints/"
PREDICTION_TYPES = ["auto", "epsilon", "v_prediction"]
NORMS = ["video", "frame"]
ATTENTIONS = ["sparse_causal", "sparse_causal_self", "frame"]


def checkpoint_choices() -> list[str]:
    """Pipelines under models/diffusers and files under models/checkpoints that resolve inside ComfyUI's folders."""
    ckpts = [CHECKPOINTS_PREFIX + n for n in files.model_files("checkpoints")]
    return sorted(files.diffusers_folders(DIFFUSERS_PREFIX)) + ckpts


def resolve_checkpoint(name: str) -> Optional[str]:
    """The real path of a ``diffusers/`` folder or ``checkpoints/`` file, or None (refused or absent alike)."""
    if name.startswith(DIFFUSERS_PREFIX):
        return files.diffusers_folders(DIFFUSERS_PREFIX).get(name)
    if name.startswith(CHECKPOINTS_PREFIX):
        return files.model_file("checkpoints", name[len(CHECKPOINTS_PREFIX) :])
    return None


class TAV_LoadCheckpoint(io.ComfyNode):
    """Load an SD 1.x/2.x model for Tune-A-Video from models/checkpoints or models/diffusers."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_LoadCheckpoint",
            display_name="Load Checkpoint (Tune-A-Video)",
            category=f"{CATEGORY}/model",
            description="Load a Stable Diffusion 1.x/2.x single-file checkpoint or diffusers folder, offline.",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=checkpoint_choices(),
                    tooltip="diffusers/<folder> from models/diffusers (e.g. diffusers/tav-shapes, the toy model) or "
                    "checkpoints/<file> from models/checkpoints (SD 1.x/2.x .safetensors).",
                ),
                io.Combo.Input(
                    "prediction_type",
                    options=PREDICTION_TYPES,
                    default="auto",
                    tooltip="auto reads it from the model (v_prediction for SD 2.x 768-v); set it when a checkpoint "
                    "is detected wrongly.",
                ),
                precision_input(),
            ],
            outputs=[
                PIPELINE.Output(
                    "pipeline_out",
                    display_name="pipeline",
                    tooltip="The (2-D, not yet inflated) Stable Diffusion pipeline.",
                )
            ],
        )

    @classmethod
    def execute(cls, model: str, prediction_type: str, precision: str) -> io.NodeOutput:
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("precision", precision, PRECISIONS)
        from tav import checkpoints

        path = resolve_checkpoint(model)
        if path is None:
            raise ValueError(
                f"model {model!r} is not a pipeline folder in models/diffusers or a file in models/checkpoints "
                "(what leads outside ComfyUI's folders, also through symlinks, is refused): pick one from the list"
            )
        with torch.inference_mode(False):  # normal tensors: tuning can then share them instead of copying
            pipe = checkpoints.load_pipeline(
                path,
                device=memory.offload_device(),  # ComfyUI's manager loads it where a node needs it
                dtype=load_dtype(precision, device()),
                prediction_type=None if prediction_type == "auto" else prediction_type,
            )
        return io.NodeOutput(pipe)


class TAV_FromComfyModels(io.ComfyNode):
    """Turn stock MODEL + CLIP + VAE (Load Checkpoint, LoRA loaders, DreamBooth models) into a pipeline."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_FromComfyModels",
            display_name="From ComfyUI Models (Tune-A-Video)",
            category=f"{CATEGORY}/model",
            description="Bridge from ComfyUI's MODEL/CLIP/VAE (any SD 1.x/2.x checkpoint, LoRAs merged) to "
            "Tune-A-Video.",
            inputs=[
                io.Model.Input(
                    "model", tooltip="A Stable Diffusion 1.x/2.x MODEL, e.g. from Load Checkpoint or a LoRA loader."
                ),
                io.Clip.Input("clip", tooltip="The matching CLIP text encoder."),
                io.Vae.Input("vae", tooltip="The matching VAE."),
                precision_input(),
            ],
            outputs=[
                PIPELINE.Output(
                    "pipeline_out",
                    display_name="pipeline",
                    tooltip="A Tune-A-Video pipeline with exactly the weights of the given models (LoRAs applied).",
                )
            ],
        )

    @classmethod
    def execute(cls, model: Any, clip: Any, vae: Any, precision: str) -> io.NodeOutput:
        check_choice("precision", precision, PRECISIONS)
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
        return io.NodeOutput(pipe)


class TAV_Inflate(io.ComfyNode):
    """Turn a 2-D pipeline into a video one: sparse-causal attention + temporal attention layers."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_Inflate",
            display_name="Inflate to Video Model (Tune-A-Video)",
            category=f"{CATEGORY}/model",
            description="Inflate the UNet: ST-Attn (frame 0 + previous frame keys) and zero-initialised temporal "
            "attention.",
            inputs=[
                PIPELINE.Input("pipeline", tooltip="A 2-D pipeline from Load Checkpoint or From ComfyUI Models."),
                io.Combo.Input(
                    "norm",
                    options=NORMS,
                    default="video",
                    tooltip="video: GroupNorm statistics over all frames (the reference). frame: per-frame GroupNorm.",
                ),
                io.Combo.Input(
                    "attention",
                    options=ATTENTIONS,
                    default="sparse_causal",
                    tooltip="sparse_causal: each frame attends to frame 0 and the previous frame (the paper)."
                    " sparse_causal_self: frame 0, the previous frame and the frame itself."
                    " frame: no cross-frame attention (ablation).",
                ),
                seed_input("Seed for the random init of the new temporal layers."),
            ],
            outputs=[
                PIPELINE.Output(
                    "pipeline_out",
                    display_name="pipeline",
                    tooltip="The inflated pipeline (shares the input's weights; the input is not changed).",
                )
            ],
        )

    @classmethod
    def execute(cls, pipeline: Pipeline, norm: str, attention: str, seed: int) -> io.NodeOutput:
        check_choice("norm", norm, NORMS)
        check_choice("attention", attention, ATTENTIONS)
        from tav import inflation

        if inflation.is_inflated(pipeline):
            unet = pipeline.unet
            if (getattr(unet, "norm", norm), getattr(unet, "attention", attention)) != (norm, attention):
                raise ValueError(
                    f"the pipeline is already inflated with norm={unet.norm}, attention={unet.attention}; "
                    "connect the 2-D pipeline from the loader instead"
                )
            log.info("Tune-A-Video: pipeline already inflated, passing it through")
            return io.NodeOutput(pipeline)
        return io.NodeOutput(inflation.inflate(pipeline, norm=norm, attention=attention, seed=seed))


class TAV_SaveTuned(io.ComfyNode):
    """Save the tuned weights (a few MB) into models/tuneavideo."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_SaveTuned",
            display_name="Save Tuned Weights (Tune-A-Video)",
            category=f"{CATEGORY}/model",
            description="Write only the tuned and temporal tensors as .safetensors, with the base model's fingerprint.",
            is_output_node=True,
            inputs=[
                PIPELINE.Input("pipeline", tooltip="A tuned pipeline from Tune."),
                io.String.Input(
                    "filename_prefix",
                    default="tav_tuned",
                    tooltip="File name prefix inside models/tuneavideo; a counter is appended.",
                ),
            ],
            outputs=[
                io.String.Output(
                    "filename",
                    display_name="filename",
                    tooltip="The file name inside models/tuneavideo (for Load Tuned).",
                )
            ],
        )

    @classmethod
    def execute(cls, pipeline: Pipeline, filename_prefix: str) -> io.NodeOutput:
        from tav import inflation, weights

        if not inflation.is_inflated(pipeline):
            raise ValueError("Save Tuned needs a tuned pipeline (from Tune or Load Tuned)")
        root = folder_paths.get_folder_paths(TUNED_FOLDER)[0]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, root)
        os.makedirs(files.output_folder(folder, root, f"models/{TUNED_FOLDER}"), exist_ok=True)
        filename = f"{name}_{counter:05}_.safetensors"
        weights.save_tuned(os.path.join(folder, filename), pipeline)  # metadata from what Tune recorded
        rel = f"{subfolder}/{filename}" if subfolder else filename
        return io.NodeOutput(rel, ui={"text": [rel]})


class TAV_LoadTuned(io.ComfyNode):
    """Apply tuned weights from models/tuneavideo to the base pipeline they were tuned from."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_LoadTuned",
            display_name="Load Tuned Weights (Tune-A-Video)",
            category=f"{CATEGORY}/model",
            description="Load Tune-A-Video weights saved by Save Tuned onto the same base model.",
            inputs=[
                PIPELINE.Input("pipeline", tooltip="The base pipeline the weights were tuned from (2-D or inflated)."),
                io.Combo.Input(
                    "tuned_weights",
                    options=files.model_files(TUNED_FOLDER),
                    tooltip="A .safetensors file from models/tuneavideo.",
                ),
                io.Boolean.Input(
                    "check_base_model",
                    default=True,
                    tooltip="Refuse weights tuned on a different base model (recommended).",
                ),
            ],
            outputs=[
                PIPELINE.Output(
                    "pipeline_out",
                    display_name="pipeline",
                    tooltip="The tuned, inflated pipeline (the input is not changed).",
                )
            ],
        )

    @classmethod
    def execute(cls, pipeline: Pipeline, tuned_weights: str, check_base_model: bool) -> io.NodeOutput:
        from tav import weights

        path = files.required_model_file(TUNED_FOLDER, tuned_weights)
        with torch.inference_mode(False):
            return io.NodeOutput(weights.load_tuned(path, pipeline, check_base=check_base_model))
