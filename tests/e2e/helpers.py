"""Workflow helpers shared by the end-to-end tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from tav import ddim, native
from tav.checkpoints import sd_scheduler_config

REPO = Path(__file__).resolve().parents[2]
API_DIR = REPO / "workflows" / "api"
UI_DIR = REPO / "workflows"
#: the clip the test fixture writes into the input folder (8 frames, 64x64)
TEST_CLIP = "tav_shapes_red_square.mp4"
#: ComfyUI's sigma(t=0): the reference DDIM ends at alpha_bar_0, which ComfyUI scales by sqrt(1 + s0^2)
SIGMA0 = float(native.sigmas_from_alphas(ddim.alphas_cumprod(sd_scheduler_config()))[0])


def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def node_of(prompt: dict, class_type: str) -> str:
    """The id of the only node of ``class_type``."""
    ids = [k for k, v in prompt.items() if v["class_type"] == class_type]
    assert len(ids) == 1, f"expected one {class_type}, found {ids}"
    return ids[0]


def nodes_of(prompt: dict, class_type: str) -> list[str]:
    return [k for k, v in prompt.items() if v["class_type"] == class_type]


def set_inputs(prompt: dict, class_type: str, **values: Any) -> None:
    for k in nodes_of(prompt, class_type):
        prompt[k]["inputs"].update(values)


def make_small(prompt: dict, *, frames: int = 2, size: int = 64, steps: int = 2, tune_steps: int = 1) -> dict:
    """A copy of an API workflow shrunk for the CPU: few frames and steps, 64 px, the test clip."""
    p = copy.deepcopy(prompt)
    set_inputs(p, "TAV_LoadVideo", video=TEST_CLIP, n_frames=frames, start=0, stride=1, width=size, height=size)
    set_inputs(p, "TAV_Tune", steps=tune_steps, gradient_checkpointing=False)
    set_inputs(p, "TAV_DDIMInvert", steps=steps)
    set_inputs(p, "TAV_Sample", steps=steps, frames=frames, width=size, height=size)
    return p


def saved_files(entry: dict, node_id: str) -> list[dict]:
    """The ``{"filename", "subfolder", "type"}`` records a node reported in /history."""
    out = entry["outputs"].get(node_id, {})
    return list(out.get("images", []))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: how the native-path tests measure differences."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def latent(server: Any, entry: dict, node: str) -> torch.Tensor:
    rec = entry["outputs"][node]["latents"][0]
    with safe_open(str(server.output / rec["subfolder"] / rec["filename"]), "pt") as f:
        return f.get_tensor("latent_tensor")


def combo_options(decl: list) -> list:
    """The options of a combo input in /object_info: a V1 list, or V3's ``["COMBO", {"options": [...]}]``."""
    return decl[0] if isinstance(decl[0], list) else decl[1]["options"]
