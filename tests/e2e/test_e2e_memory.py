"""The pipeline nodes under ComfyUI's memory manager (nodes/memory.py), in-process on the CPU host.

ComfyUI's VRAM state is set to each mode the rule distinguishes; the devices stay the CPU, so what is
checked is the manager's bookkeeping (registered while a node computes, loaded whole, released by
``unload_all_models`` / after the node in the low-VRAM modes), not a physical move to a GPU.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from comfy_host import COMFY_DIR, PYTHON


def run(vram: str) -> dict:
    cmd = [PYTHON, str(Path(__file__).with_name("memory_inprocess.py")), "--comfy-dir", str(COMFY_DIR)]
    res = subprocess.run([*cmd, "--vram", vram], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads([x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT ") :])


@pytest.mark.parametrize("vram", ["NORMAL_VRAM", "LOW_VRAM", "NO_VRAM"])
def test_pipeline_nodes_follow_comfyui_memory_management(vram: str) -> None:
    r = run(vram)
    assert r["vram_state"] == vram
    # while each node computes, its pipeline is one of ComfyUI's loaded models, loaded whole (NO_VRAM asks
    # ComfyUI's loader for a 0.1-byte partial load, which diffusers layers could not compute with)
    during = {"tune": [[True, True]], "invert": [[True, True]], "sample": [[True, True]]}
    assert r["during"] == {**during, "sample_control": [[True, True, True]]}  # and a Sample's ControlNet
    kept = vram == "NORMAL_VRAM"  # the low-VRAM modes keep nothing loaded between nodes
    assert r["control_after_sample"] is kept
    assert r["after_tune"] == {"input": kept, "tuned": kept}
    assert r["after_invert"] is kept and r["after_sample"] is kept
    assert (r["loaded_bytes_before_unload_all"] > 0) is kept
    # ComfyUI making room for its own models (what load_models_gpu does for a checkpoint) evicts ours
    assert r["after_unload_all"] == {"tuned": False, "loaded_bytes": 0}
    # the partial load ComfyUI asks for on a GPU under --novram: ours loads whole, a plain ModelPatcher
    # would leave every diffusers layer's weights on the CPU
    assert r["novram_load_fraction"] == {"pipeline_patcher": 1.0, "plain_model_patcher": 0.0}
    assert r["input_unchanged"]
