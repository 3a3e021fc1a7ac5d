"""Stock Load Checkpoint -> From ComfyUI Models -> tune/invert/sample, on a random SD1.5-shaped model."""

from __future__ import annotations

import numpy as np
from comfy_client import ComfyClient, error_text
from comfy_host import ComfyServer
from helpers import load_api, make_small, node_of, saved_files
from PIL import Image

from tav.video_io import read_video


def test_dreambooth_workflow_on_tiny_sd15(client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str) -> None:
    p = make_small(load_api("tav_dreambooth_checkpoint"), frames=2, size=64, steps=2, tune_steps=1)
    loader = node_of(p, "CheckpointLoaderSimple")
    p[loader]["inputs"]["ckpt_name"] = tiny_sd15
    sample, save = node_of(p, "TAV_Sample"), node_of(p, "TAV_SaveVideo")
    assert "positive" in p[sample]["inputs"]  # stock CONDITIONING drives the edit
    # the Sample LATENT decoded by the stock VAE must match the pack's own decode
    p["100"] = {"class_type": "VAEDecode", "inputs": {"samples": [sample, 1], "vae": [loader, 2]}}
    p["101"] = {"class_type": "SaveImage", "inputs": {"images": ["100", 0], "filename_prefix": "stock_decode"}}
    p["102"] = {"class_type": "SaveImage", "inputs": {"images": [sample, 0], "filename_prefix": "tav_decode"}}

    pid, entry = client.run(p, timeout=400)
    assert entry["status"]["status_str"] == "success", error_text(entry)

    rec = saved_files(entry, save)[0]
    clip = read_video(comfy_server.output / rec["subfolder"] / rec["filename"], n_frames=0, stride=1, resize="none")
    assert clip.frames.shape == (2, 64, 64, 3)

    stock = [
        np.asarray(Image.open(comfy_server.output / r["filename"]), dtype=np.float32) for r in saved_files(entry, "101")
    ]
    ours = [
        np.asarray(Image.open(comfy_server.output / r["filename"]), dtype=np.float32) for r in saved_files(entry, "102")
    ]
    assert len(stock) == len(ours) == 2
    diff = max(float(np.abs(a - b).mean()) for a, b in zip(stock, ours, strict=True))
    assert diff < 2.0, f"stock VAE decode of the LATENT differs from the pack's frames by {diff:.2f}/255"
    assert {m["data"]["node"] for m in client.events(pid, "progress")} >= {
        node_of(p, "TAV_Tune"),
        node_of(p, "TAV_DDIMInvert"),
        sample,
    }
