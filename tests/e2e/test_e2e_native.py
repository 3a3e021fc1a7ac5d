"""The native path on the live host: the tuned model as a stock MODEL, sampled by ComfyUI's samplers.

Everything runs on one random-weight SD1.5-shaped checkpoint (``tiny_sd15``) with random tuned
weights (``native_inprocess.py`` writes them, so temporal attention and the tuned projections
matter). Server tests queue API graphs over /prompt, save latents with the stock Save Latent node
and compare them with ``TAV_Sample``'s from the same inverted noise; the in-process checks
(negative controls, lowvram patching path, size accounting) run ``native_inprocess.py`` against
the same ComfyUI in a subprocess. Measured figures are max |diff| / max |ref|.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
from comfy_client import ComfyClient, error_text, status_messages
from comfy_host import COMFY_DIR, PYTHON, ComfyServer
from helpers import SIGMA0, TEST_CLIP, latent, load_api, node_of, rel, set_inputs
from safetensors import safe_open
from safetensors.torch import save_file

from tav import native

TUNED = "tav_native_probe.safetensors"
LORA = "tav_native_probe_lora.safetensors"
FROM_PIPELINE = "(from pipeline)"
CFG = 7.5
#: frame size: 32 px = 4x4 latents, the smallest the tiny UNet (one downsampling) and ControlNet take
SIZE = 32


@pytest.fixture(scope="module")
def inprocess(comfy_server: ComfyServer, tiny_sd15: str) -> dict:
    """Run the in-process checks once; they also write the tuned weights the server tests load."""
    ckpt = comfy_server.models / "checkpoints" / tiny_sd15
    out = comfy_server.models / "tuneavideo" / TUNED
    cmd = [PYTHON, str(Path(__file__).with_name("native_inprocess.py")), str(ckpt)]
    cmd += ["--comfy-dir", str(COMFY_DIR), "--tuned-out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    print("native in-process:", json.dumps(result, indent=1))
    return result


@pytest.fixture(scope="module")
def lora(comfy_server: ComfyServer, tiny_sd15: str) -> str:
    """A small random stock-format LoRA on attn1.to_q (a tuned key) and attn2.to_k of every block."""
    path = comfy_server.models / "loras" / LORA
    if path.is_file():
        return LORA
    g = torch.Generator().manual_seed(5)
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(comfy_server.models / "checkpoints" / tiny_sd15), "pt") as f:
        for key in f.keys():
            if key.endswith(("attn1.to_q.weight", "attn2.to_k.weight")):
                out_dim, in_dim = f.get_slice(key).get_shape()
                name = "lora_unet_" + key[len("model.diffusion_model.") : -len(".weight")].replace(".", "_")
                tensors[f"{name}.lora_up.weight"] = torch.randn(out_dim, 4, generator=g) * 0.2
                tensors[f"{name}.lora_down.weight"] = torch.randn(4, in_dim, generator=g) * 0.2
                tensors[f"{name}.alpha"] = torch.tensor(4.0)
    assert tensors
    save_file(tensors, str(path))
    return LORA


def graph(ckpt: str, frames: int, steps: int, *, file_route: bool = False, cfg: float = CFG) -> dict[str, Any]:
    """TAV_Sample and the stock-sampler route from the same inverted noise, each saved by Save Latent."""

    def n(cls: str, **inputs: Any) -> dict:
        return {"class_type": cls, "inputs": inputs}

    p = {
        "1": n("CheckpointLoaderSimple", ckpt_name=ckpt),
        "2": n("TAV_FromComfyModels", model=["1", 0], clip=["1", 1], vae=["1", 2], precision="fp32"),
        "3": n("TAV_LoadTuned", pipeline=["2", 0], tuned_weights=TUNED, check_base_model=True),
        "4": n("TAV_LoadVideo", video=TEST_CLIP, n_frames=frames, start=0, stride=1, width=SIZE, height=SIZE,
                resize="stretch"),
        "5": n("TAV_DDIMInvert", pipeline=["3", 0], frames=["4", 0], steps=steps, prompt=""),
        "6": n("CLIPTextEncode", text="a blue circle on a white background", clip=["1", 1]),
        "7": n("CLIPTextEncode", text="", clip=["1", 1]),
        "8": n(
            "TAV_Sample", pipeline=["3", 0], prompt="", negative_prompt="", steps=steps, cfg=cfg, eta=0.0, seed=0,
            frames=frames, width=SIZE, height=SIZE, inverted=["5", 0], positive=["6", 0], negative=["7", 0],
        ),
        "9": n("SaveLatent", samples=["8", 1], filename_prefix=f"native/tav_{frames}f"),
        "10": n(
            "TAV_ApplyToModel", model=["1", 0], tuned_weights=TUNED if file_route else FROM_PIPELINE,
            check_base_model=True,
        ),
        "11": n("TAV_InvertedToLatent", inverted=["5", 0], model=["10", 0]),
        "12": n("TAV_DDIMSigmas", model=["10", 0], steps=steps),
        "13": n("CFGGuider", model=["10", 0], positive=["6", 0], negative=["7", 0], cfg=cfg),
        "14": n("DisableNoise"),
        "15": n("KSamplerSelect", sampler_name="ddim"),
        "16": n(
            "SamplerCustomAdvanced", noise=["14", 0], guider=["13", 0], sampler=["15", 0], sigmas=["12", 0],
            latent_image=["11", 0],
        ),
        "17": n("SaveLatent", samples=["16", 0], filename_prefix=f"native/stock_{frames}f"),
    }  # fmt: skip
    if not file_route:
        p["10"]["inputs"]["pipeline"] = ["3", 0]
    return p


def run_ok(client: ComfyClient, prompt: dict, timeout: float = 600) -> tuple[str, dict]:
    pid, entry = client.run(prompt, timeout=timeout)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    return pid, entry


def stock_vs_tav(server: ComfyServer, entry: dict, stock_node: str = "17", tav_node: str = "9") -> float:
    """The stock route's LATENT, back in the reference's convention, against TAV_Sample's."""
    stock, ours = latent(server, entry, stock_node), latent(server, entry, tav_node)
    assert stock.shape == ours.shape, (stock.shape, ours.shape)
    return rel(stock / (1 + SIGMA0**2) ** 0.5, ours)


# --- in-process: the patched diffusion model against tav's VideoUNet --------------------------


def test_patched_unet_matches_video_unet(inprocess: dict) -> None:
    for frames, err in inprocess["parity"].items():
        assert err <= 1e-5, f"{frames} frames: patched MODEL vs VideoUNet {err:.2e}"
    assert inprocess["parity_frame_norm"] <= 1e-5, "weights tuned with per-frame GroupNorm"
    assert inprocess["parity_self_keys"] <= 1e-5, "weights tuned with the current frame among the keys"
    assert inprocess["self_keys_vs_reference_keys"] > 1e-3, "the key set must change the output"


def test_negative_controls_move_the_output(inprocess: dict) -> None:
    """Each piece matters, so the parity tests can fail."""
    assert set(inprocess["controls"]) == set(native.PIECES)
    for piece, err in inprocess["controls"].items():
        assert err > 0.01, f"leaving out {piece} changed the output by only {err:.2e}"


def test_lowvram_path_matches_full_path(inprocess: dict) -> None:
    assert inprocess["lowvram_patch_counter"] > 0  # the tuned projections went through LowVramPatch
    assert inprocess["lowvram"] <= 1e-5


def test_base_model_untouched_in_process(inprocess: dict) -> None:
    assert inprocess["base_bit_identical"] and inprocess["base_state_identical"] and inprocess["base_has_no_patches"]


def test_size_counts_temporal_weights(inprocess: dict) -> None:
    size = inprocess["size"]
    assert size["patched"] - size["base"] == inprocess["temporal_params"] * 4  # fp32 on the CPU


def test_base_mismatch_and_double_apply_are_refused(inprocess: dict) -> None:
    msg = inprocess["mismatch_error"]
    assert "0123456789abcdef" in msg and inprocess["fingerprint"] in msg, msg
    assert "already has Tune-A-Video" in inprocess["double_apply_error"]


# --- over /prompt: stock samplers on the patched MODEL ------------------------------------------


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_stock_sampler_reproduces_tav_sample(
    client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str, inprocess: dict, frames: int
) -> None:
    """SamplerCustomAdvanced + DDIM Sigmas + DisableNoise + CFGGuider + ddim == TAV_Sample (CFG 7.5)."""
    p = graph(tiny_sd15, frames, steps=4, file_route=frames == 5)
    if frames == 2:  # control over the queue: the same route on the unpatched MODEL must not match
        p["70"] = copy.deepcopy(p["13"])
        p["70"]["inputs"]["model"] = ["1", 0]
        p["71"] = copy.deepcopy(p["16"])
        p["71"]["inputs"]["guider"] = ["70", 0]
        p["72"] = {"class_type": "SaveLatent", "inputs": {"samples": ["71", 0], "filename_prefix": "native/unpatched"}}
    _, entry = run_ok(client, p)
    err = stock_vs_tav(comfy_server, entry)
    print(f"stock route vs TAV_Sample, {frames} frames: {err:.2e}")
    assert err <= 1e-4
    assert latent(comfy_server, entry, "17").shape[0] == frames
    if frames == 2:
        off = stock_vs_tav(comfy_server, entry, stock_node="72")
        print(f"the same route on the unpatched MODEL vs TAV_Sample: {off:.2e}")
        assert off > 0.01


def test_ksampler_advanced_ddim_uniform_50_steps(
    client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str, inprocess: dict
) -> None:
    p = graph(tiny_sd15, 1, steps=50)  # the schedule is what is compared here; frames are covered above
    p["20"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "model": ["10", 0], "add_noise": "disable", "noise_seed": 0, "steps": 50, "cfg": CFG,
            "sampler_name": "ddim", "scheduler": "ddim_uniform", "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["11", 0], "start_at_step": 0, "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
        },
    }  # fmt: skip
    p["21"] = {"class_type": "SaveLatent", "inputs": {"samples": ["20", 0], "filename_prefix": "native/ksa"}}
    _, entry = run_ok(client, p)
    exact, ksa = (
        stock_vs_tav(comfy_server, entry),
        rel(latent(comfy_server, entry, "21"), latent(comfy_server, entry, "9")),
    )
    print(f"50 steps: DDIM Sigmas route {exact:.2e}, KSamplerAdvanced ddim/ddim_uniform {ksa:.2e}")
    assert exact <= 1e-4
    assert ksa <= 0.01


def test_base_model_untouched_over_the_queue(
    client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str, inprocess: dict
) -> None:
    """A stock 2-D KSampler run on the loader's MODEL before and after the bridge sampled: bit-identical."""

    def ksampler(latent_src: list) -> dict:
        return {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                "positive": ["6", 0], "negative": ["7", 0], "latent_image": latent_src, "denoise": 1.0,
            },
        }  # fmt: skip

    p = graph(tiny_sd15, 2, steps=2)
    before = {k: p[k] for k in ("1", "6", "7")}
    before["30"] = {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 2}}
    before["31"] = ksampler(["30", 0])
    before["32"] = {"class_type": "SaveLatent", "inputs": {"samples": ["31", 0], "filename_prefix": "native/base"}}
    _, e1 = run_ok(client, before)
    # after: the same sampling, on zeros that depend on the patched MODEL's output (so it runs after it)
    p["33"] = {"class_type": "LatentMultiply", "inputs": {"samples": ["16", 0], "multiplier": 0.0}}
    p["34"] = ksampler(["33", 0])
    p["35"] = {"class_type": "SaveLatent", "inputs": {"samples": ["34", 0], "filename_prefix": "native/base"}}
    _, e2 = run_ok(client, p)
    assert "1" in status_messages(e2)["execution_cached"]["nodes"]  # the same MODEL object as before
    a, b = latent(comfy_server, e1, "32"), latent(comfy_server, e2, "35")
    assert torch.equal(a, b), f"base MODEL changed: {rel(b, a):.2e}"


def test_lora_after_the_bridge(
    client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str, inprocess: dict, lora: str
) -> None:
    """A stock LoRA loader on the patched MODEL runs and changes the edit (its patches stack on the tuned ones)."""
    p = graph(tiny_sd15, 2, steps=2)
    p["40"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["10", 0], "lora_name": lora, "strength_model": 1.0},
    }
    p["41"] = copy.deepcopy(p["13"])
    p["41"]["inputs"]["model"] = ["40", 0]
    p["42"] = copy.deepcopy(p["16"])
    p["42"]["inputs"]["guider"] = ["41", 0]
    p["43"] = {"class_type": "SaveLatent", "inputs": {"samples": ["42", 0], "filename_prefix": "native/lora_after"}}
    _, entry = run_ok(client, p)
    moved = rel(latent(comfy_server, entry, "43"), latent(comfy_server, entry, "17"))
    print(f"LoRA after the bridge moves the edit by {moved:.2e}")
    assert moved > 0.01


def test_lora_before_the_bridge_and_base_check(
    client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str, inprocess: dict, lora: str
) -> None:
    """Tuned on a LoRA'd MODEL: the same LoRA'd MODEL passes the base check and matches TAV_Sample; the
    plain checkpoint is refused with both fingerprints named."""
    p = graph(tiny_sd15, 2, steps=2)
    p["50"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["1", 0], "lora_name": lora, "strength_model": 0.8},
    }
    p["2"]["inputs"]["model"] = ["50", 0]
    p["51"] = {
        "class_type": "TAV_Inflate",
        "inputs": {"pipeline": ["2", 0], "norm": "video", "attention": "sparse_causal", "seed": 0},
    }
    p["3"] = {
        "class_type": "TAV_Tune",
        "inputs": {
            "pipeline": ["51", 0], "frames": ["4", 0], "prompt": "a red square on a white background", "steps": 1,
            "learning_rate": 1e-3, "seed": 33, "trainable_modules": "attn1.to_q, attn2.to_q, attn_temp",
            "precision": "fp32", "gradient_checkpointing": False,
        },
    }  # fmt: skip
    p["10"]["inputs"]["model"] = ["50", 0]
    _, entry = run_ok(client, p)
    err = stock_vs_tav(comfy_server, entry)
    print(f"LoRA before the bridge, stock route vs TAV_Sample: {err:.2e}")
    assert err <= 1e-4

    p["10"]["inputs"]["model"] = ["1", 0]
    _, entry = client.run(p, timeout=600)
    assert entry["status"]["status_str"] == "error"
    msg = status_messages(entry)["execution_error"]["exception_message"]
    named = set(re.findall(r"\b[0-9a-f]{16}\b", msg))
    assert "made for base model" in msg and inprocess["fingerprint"] in named and len(named) == 2, msg


#: (id, steps, start, end, hint size as multiples of the frame's (width, height) or None)
CONTROLNET_SETTINGS = [
    ("whole", 3, 0.0, 1.0, None),
    ("percent-window", 5, 0.2, 0.6, None),  # a percent of the noise schedule, not of the 5 steps
    ("hint-2x", 3, 0.0, 1.0, (2, 2)),  # resized nearest-exact
    ("hint-wider", 3, 0.0, 1.0, (3, 2)),  # centre-cropped to the frame's aspect, then resized
]


@pytest.mark.parametrize(("steps", "start", "end", "hint_scale"), [c[1:] for c in CONTROLNET_SETTINGS],
                         ids=[c[0] for c in CONTROLNET_SETTINGS])  # fmt: skip
def test_controlnet_apply_advanced_matches_tav_controlnet(
    client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str, inprocess: dict, controlnet: str,
    steps: int, start: float, end: float, hint_scale: Optional[tuple[int, int]],
) -> None:  # fmt: skip
    """Stock Canny per frame -> stock ControlNetApplyAdvanced on the patched MODEL == TAV_ControlNet + TAV_Sample,
    for every setting the two share: start/end percent and hints of another size or aspect."""
    p = graph(tiny_sd15, 2, steps=steps)
    p["60"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": controlnet}}
    p["61"] = {"class_type": "Canny", "inputs": {"image": ["4", 0], "low_threshold": 0.2, "high_threshold": 0.5}}
    hint = ["61", 0]
    if hint_scale:
        p["67"] = {"class_type": "ImageScale",
                   "inputs": {"image": hint, "upscale_method": "bilinear", "width": SIZE * hint_scale[0],
                              "height": SIZE * hint_scale[1], "crop": "disabled"}}  # fmt: skip
        hint = ["67", 0]
    p["62"] = {
        "class_type": "TAV_ControlNet",
        "inputs": {"pipeline": ["3", 0], "control_net": ["60", 0], "image": hint, "strength": 1.0,
                   "start_percent": start, "end_percent": end},
    }  # fmt: skip
    p["8"]["inputs"]["control"] = ["62", 0]
    p["63"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["60", 0], "image": hint,
                   "strength": 1.0, "start_percent": start, "end_percent": end},
    }  # fmt: skip
    p["13"]["inputs"]["positive"] = ["63", 0]
    p["13"]["inputs"]["negative"] = ["63", 1]
    p["64"] = copy.deepcopy(p["17"])  # the same route without the ControlNet: it must matter
    p["65"] = copy.deepcopy(p["13"])
    p["65"]["inputs"].update(positive=["6", 0], negative=["7", 0])
    p["66"] = copy.deepcopy(p["16"])
    p["66"]["inputs"]["guider"] = ["65", 0]
    p["64"]["inputs"].update(samples=["66", 0], filename_prefix="native/no_cn")
    _, entry = run_ok(client, p)
    err = stock_vs_tav(comfy_server, entry)
    effect = rel(latent(comfy_server, entry, "64"), latent(comfy_server, entry, "17"))
    print(f"ControlNetApplyAdvanced vs TAV_ControlNet ({steps} steps, {start}-{end}, hint x{hint_scale}): {err:.2e} "
          f"(the ControlNet moves the edit by {effect:.2e})")  # fmt: skip
    assert err <= 1e-4
    assert effect > 0.01


def test_native_workflows_run(
    client: ComfyClient, comfy_server: ComfyServer, tiny_sd15: str, lora: str, controlnet: str
) -> None:
    """The shipped native workflows, shrunk for the CPU, on the tiny checkpoint."""
    for name in ("tav_native_edit", "tav_native_lora_controlnet"):
        p = load_api(name)
        set_inputs(p, "CheckpointLoaderSimple", ckpt_name=tiny_sd15)
        set_inputs(p, "TAV_LoadVideo", video=TEST_CLIP, n_frames=2, start=0, stride=1, width=SIZE, height=SIZE)
        set_inputs(p, "TAV_Tune", steps=1, gradient_checkpointing=False)
        set_inputs(p, "TAV_DDIMInvert", steps=2)
        set_inputs(p, "TAV_DDIMSigmas", steps=2)
        set_inputs(p, "LoraLoaderModelOnly", lora_name=lora)
        set_inputs(p, "ControlNetLoader", control_net_name=controlnet)
        _, entry = run_ok(client, p)
        rec = entry["outputs"][node_of(p, "TAV_SaveVideo")]["images"][0]
        assert (comfy_server.output / rec["subfolder"] / rec["filename"]).is_file()
