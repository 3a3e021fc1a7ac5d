"""The ControlNet workflow (stock Canny edges of the source clip -> per-frame ControlNet -> Sample),
on the tiny SD1.5-shaped checkpoint and a tiny generated ControlNet."""

from __future__ import annotations

import subprocess

import numpy as np
import torch
from comfy_client import ComfyClient, error_text
from comfy_host import COMFY_DIR, PYTHON, REPO, ComfyServer
from helpers import load_api, make_small, node_of, saved_files
from safetensors.torch import load_file

from tav.video_io import read_video


def _tiny_controlnet(comfy_server: ComfyServer) -> str:
    out = comfy_server.models / "controlnet" / "tiny_sd15_controlnet.safetensors"
    if not out.is_file():
        cmd = [
            PYTHON,
            str(REPO / "scripts" / "make_tiny_sd15.py"),
            str(out),
            "--controlnet",
            "--comfy-dir",
            str(COMFY_DIR),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    return out.name


def _run(client: ComfyClient, comfy_server: ComfyServer, prompt: dict) -> tuple[np.ndarray, torch.Tensor]:
    """The saved video's frames and Sample's LATENT (through stock Save Latent)."""
    prompt = {**prompt, "990": {"class_type": "SaveLatent", "inputs": {"samples": [node_of(prompt, "TAV_Sample"), 1]}}}
    prompt["990"]["inputs"]["filename_prefix"] = "tav_e2e/controlnet"
    _pid, entry = client.run(prompt, timeout=400)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    rec = saved_files(entry, node_of(prompt, "TAV_SaveVideo"))[0]
    clip = read_video(comfy_server.output / rec["subfolder"] / rec["filename"], n_frames=0, stride=1, resize="none")
    lat = entry["outputs"]["990"]["latents"][0]
    latent = load_file(str(comfy_server.output / lat["subfolder"] / lat["filename"]))["latent_tensor"]
    return clip.frames.numpy(), latent


def test_controlnet_edges_workflow(client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str) -> None:
    p = make_small(load_api("tav_controlnet_edges"), frames=2, size=64, steps=2, tune_steps=1)
    p[node_of(p, "TAV_LoadCheckpoint")]["inputs"]["model"] = f"checkpoints/{tiny_sd15}"
    p[node_of(p, "ControlNetLoader")]["inputs"]["control_net_name"] = _tiny_controlnet(comfy_server)
    canny, control = node_of(p, "Canny"), node_of(p, "TAV_ControlNet")
    assert p[control]["inputs"]["image"] == [canny, 0]  # the hint is the clip's own per-frame edges

    frames, first = _run(client, comfy_server, p)
    assert frames.shape == (2, 64, 64, 3) and first.shape == (2, 4, 8, 8)
    # an edge map with no edges (a black frame per frame, stock Empty Image) must change the edit
    p["900"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0}}
    p[control]["inputs"]["image"] = ["900", 0]
    _, second = _run(client, comfy_server, p)
    change = float((first - second).abs().max() / first.abs().max())
    print(f"ControlNet hint change: max |diff| / max |ref| = {change:.3f}")
    assert change > 0.01, f"the sampled latent did not change with the hint (max |diff| / max |ref| = {change:.2e})"

    # a bad window is refused when queued (HTTP 200 if other outputs of the graph are still valid)
    p[control]["inputs"].update(start_percent=0.9, end_percent=0.1)
    status, body = client.request("POST", "/prompt", {"prompt": p, "client_id": client.client_id})
    assert status in (200, 400) and "start_percent" in str(body["node_errors"][control]), body
