"""Stock ControlNet Loader -> per-frame ControlNet -> Sample, on the tiny SD1.5-shaped model."""

from __future__ import annotations

import subprocess

from comfy_client import ComfyClient, error_text
from comfy_host import COMFY_DIR, PYTHON, REPO, ComfyServer
from helpers import load_api, make_small, node_of, saved_files

from tav.video_io import read_video


def test_controlnet_per_frame(client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str) -> None:
    out = comfy_server.models / "controlnet" / "tiny_sd15_controlnet.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
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
    p = make_small(load_api("tav_dreambooth_checkpoint"), frames=2, size=64, steps=2, tune_steps=1)
    p[node_of(p, "CheckpointLoaderSimple")]["inputs"]["ckpt_name"] = tiny_sd15
    sample, video, tune = node_of(p, "TAV_Sample"), node_of(p, "TAV_LoadVideo"), node_of(p, "TAV_Tune")
    p["200"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": out.name}}
    p["201"] = {
        "class_type": "TAV_ControlNet",
        "inputs": {
            "pipeline": [tune, 0],
            "control_net": ["200", 0],
            "image": [video, 0],
            "strength": 1.0,
            "start_percent": 0.0,
            "end_percent": 1.0,
        },
    }
    p[sample]["inputs"]["control"] = ["201", 0]
    pid, entry = client.run(p, timeout=400)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    rec = saved_files(entry, node_of(p, "TAV_SaveVideo"))[0]
    clip = read_video(comfy_server.output / rec["subfolder"] / rec["filename"], n_frames=0, stride=1, resize="none")
    assert clip.frames.shape == (2, 64, 64, 3)
    # a bad window is refused when queued (HTTP 200 if other outputs of the graph are still valid)
    p["201"]["inputs"]["start_percent"] = 0.9
    p["201"]["inputs"]["end_percent"] = 0.1
    status, body = client.request("POST", "/prompt", {"prompt": p, "client_id": client.client_id})
    assert status in (200, 400) and "start_percent" in str(body["node_errors"]["201"]), body
