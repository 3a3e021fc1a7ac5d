"""ControlNet for Tune-A-Video: a stock CONTROL_NET plus one hint frame per video frame."""

from __future__ import annotations

from typing import Optional

import torch
from comfy_api.v0_0_2 import io

from tav.pipeline import Pipeline

from .common import CATEGORY, CONTROL, PIPELINE, first_error, number_error


class TAV_ControlNet(io.ComfyNode):
    """Turn a stock ControlNet (from ControlNet Loader) and per-frame hints into Sample's control."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_ControlNet",
            display_name="ControlNet per Frame (Tune-A-Video)",
            category=f"{CATEGORY}/sampling",
            description="Structure control per frame (pose, depth, edges of the source clip), as the paper's "
            "pose-guided editing. The ControlNet must match the base model (SD 1.x or 2.x).",
            inputs=[
                PIPELINE.Input(
                    "pipeline", tooltip="The pipeline Sample uses; its UNet defines the ControlNet's shape."
                ),
                io.ControlNet.Input("control_net", tooltip="From the stock Load ControlNet Model node."),
                io.Image.Input(
                    "image",
                    tooltip="One hint per frame (e.g. a preprocessed pose/depth/canny video); same frame count. "
                    "Another size is centre-cropped to the frame's aspect and resized nearest-exact, as stock does.",
                ),
                io.Float.Input(
                    "strength", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="ControlNet residual scale."
                ),
                io.Float.Input(
                    "start_percent",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.001,
                    tooltip="Where it starts, as a fraction of the noise schedule (0 = pure noise), as stock Apply "
                    "ControlNet reads it.",
                ),
                io.Float.Input(
                    "end_percent",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.001,
                    tooltip="Where it stops, as a fraction of the noise schedule (1 = clean), as stock Apply "
                    "ControlNet.",
                ),
            ],
            outputs=[CONTROL.Output("control", display_name="control", tooltip="Connect to Sample's control input.")],
        )

    @classmethod
    def validate_inputs(
        cls, start_percent: float = 0.0, end_percent: float = 1.0, strength: Optional[float] = None
    ) -> bool | str:
        bad = first_error(
            number_error("strength", strength, 0, 10),
            number_error("start_percent", start_percent, 0, 1),
            number_error("end_percent", end_percent, 0, 1),
        )
        if bad is not True:
            return bad
        if start_percent > end_percent:
            return f"start_percent ({start_percent}) must not be after end_percent ({end_percent})"
        return True

    @classmethod
    def execute(
        cls,
        pipeline: Pipeline,
        control_net: object,
        image: torch.Tensor,
        strength: float,
        start_percent: float,
        end_percent: float,
    ) -> io.NodeOutput:
        from tav.control import Control, controlnet_from_ldm

        model = getattr(control_net, "control_model", None)
        if model is None:
            raise ValueError(
                f"{type(control_net).__name__} is not a ControlNet with its own model (T2I-Adapters and "
                "control LoRAs are not supported); load a ControlNet with the stock Load ControlNet Model node"
            )
        with torch.inference_mode(False):
            sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
            net = controlnet_from_ldm(sd, pipeline.unet)
        return io.NodeOutput(Control(net, image[..., :3].clone(), strength, start_percent, end_percent))
