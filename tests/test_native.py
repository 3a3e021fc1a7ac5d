"""Pure logic of the native path (tav.native): schedule, noise convention, key mapping, tuned weights.

No ComfyUI here; the ComfyUI side is tested on the live host (tests/e2e/test_e2e_native.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tav import ddim, native, weights
from tav.inflation import inflate

from .tiny import SCHEDULER, tiny_pipeline

AC = ddim.alphas_cumprod(SCHEDULER)
SIGMAS = native.sigmas_from_alphas(AC)


@pytest.mark.parametrize("steps", [1, 7, 30, 50])
def test_reference_sigmas_are_the_reference_timesteps(steps: int) -> None:
    s = native.reference_sigmas(SIGMAS, steps)
    ts = ddim.ddim_timesteps(1000, steps, 1)
    assert s.shape == (steps + 1,)
    assert torch.allclose(s.double(), SIGMAS[ts + [0]], rtol=1e-6)
    assert bool((s[:-1] > s[1:]).all())  # strictly descending
    assert 0.02 < float(s[-1]) < 0.04  # sigma(t=0) of SD's schedule, not 0
    assert native.first_sigma(SIGMAS, steps) == pytest.approx(float(SIGMAS[ts[0]]), rel=1e-6)


@pytest.mark.parametrize("steps", [999, 1000])
def test_reference_sigmas_at_the_maximum_steps(steps: int) -> None:
    """The DDIM Sigmas node's maximum: every trained noise level once, strictly descending, ending at sigma(0)."""
    s = native.reference_sigmas(SIGMAS, steps).double()
    assert s.shape == (1000,)  # 999 steps: t = 999..1 then 0; 1000 steps: t = 999..0
    assert torch.allclose(s, SIGMAS.flip(0), rtol=1e-6)
    assert bool((s[:-1] > s[1:]).all())
    assert native.first_sigma(SIGMAS, steps) == pytest.approx(float(SIGMAS[999]), rel=1e-6)


def test_thirty_steps_differ_from_a_uniform_thousand_grid() -> None:
    """Why the node exists: 30 steps start at t=958 (1 + 29*33), not at 999."""
    s = native.reference_sigmas(SIGMAS, 30)
    assert float(s[0]) == pytest.approx(float(SIGMAS[958]), rel=1e-6)


def test_latent_convention_round_trip() -> None:
    x = torch.randn(1, 4, 3, 5, 6)
    lat = native.vp_to_comfy_latent(x, 14.6, 0.18215)
    assert lat.shape == (3, 4, 5, 6)
    assert torch.allclose(lat[1], x[0, :, 1] * (1 + 14.6**2) ** 0.5 / 0.18215, rtol=1e-6)
    assert torch.allclose(native.comfy_latent_to_vp(lat, 14.6, 0.18215), x, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        native.vp_to_comfy_latent(x[0], 1.0, 1.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_euler_in_sigma_space_on_the_converted_latent_is_the_reference_ddim(prediction_type: str) -> None:
    """ComfyUI's ddim sampler (Euler in sigma) on the converted latent with our SIGMAS == tav's DDIM loop.

    A fixed random linear 'model' stands in for the UNet, evaluated at the same timesteps on the
    same inputs in both conventions (ComfyUI feeds the model x / sqrt(1 + sigma^2), the VP latent).
    """
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.3

    def model(x_vp: torch.Tensor, t: int) -> torch.Tensor:
        return torch.einsum("oc,bcfhw->bofhw", w, x_vp) * (1 + t / 1000)

    steps = 12
    ts = ddim.ddim_timesteps(1000, steps, 1)
    x_ref = torch.randn(1, 4, 2, 3, 3, generator=g, dtype=torch.float64)
    x0 = x_ref.clone()
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        a_prev = float(AC[prev]) if prev >= 0 else float(AC[0])
        x_ref = ddim.ddim_step(x_ref, model(x_ref, t), float(AC[t]), a_prev, prediction_type)

    sig = native.reference_sigmas(SIGMAS, steps).double()
    scale = 0.18215
    x = native.vp_to_comfy_latent(x0, float(sig[0]), scale).double() * scale  # what the sampler sees
    for i, t in enumerate(ts):
        s, s_next = float(sig[i]), float(sig[i + 1])
        x_vp = x / (1 + s**2) ** 0.5
        out = model(x_vp.permute(1, 0, 2, 3).unsqueeze(0), t)[0].permute(1, 0, 2, 3)
        a = 1 / (1 + s**2)
        if prediction_type == "epsilon":
            denoised = x - s * out
        else:  # ComfyUI's V_PREDICTION: x0 = sqrt(a) * x_vp - sqrt(1 - a) * v
            denoised = a**0.5 * x_vp - (1 - a) ** 0.5 * out
        x = x + (x - denoised) / s * (s_next - s)
    got = native.comfy_latent_to_vp((x / scale).float(), float(sig[-1]), scale).double()
    assert float((got - x_ref).abs().max() / x_ref.abs().max()) < 1e-5


# --- key mapping ------------------------------------------------------------------------------

D2C = {
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.norm1.weight": "input_blocks.1.1.transformer_blocks.0.norm1.weight",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_q.weight": "middle_block.1.transformer_blocks.0.attn2.to_q.weight",
    "up_blocks.1.attentions.2.transformer_blocks.1.attn1.to_q.weight": "output_blocks.5.1.transformer_blocks.1.attn1.to_q.weight",
    "down_blocks.0.resnets.0.norm1.weight": "input_blocks.1.0.in_layers.0.weight",
    "down_blocks.0.resnets.0.norm2.weight": "input_blocks.1.0.out_layers.0.weight",
    "down_blocks.0.attentions.0.norm.weight": "input_blocks.1.1.norm.weight",
    "conv_norm_out.weight": "out.0.weight",
    "conv_in.weight": "input_blocks.0.0.weight",
}  # fmt: skip


def test_comfy_keys_for_projections_and_temporal_tensors() -> None:
    assert (
        native.comfy_key("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", D2C)
        == "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    )
    assert (
        native.comfy_key("mid_block.attentions.0.transformer_blocks.0.attn_temp.to_out.0.bias", D2C)
        == "middle_block.1.transformer_blocks.0.attn_temp.to_out.0.bias"
    )
    with pytest.raises(KeyError, match="architecture"):
        native.comfy_key("down_blocks.3.attentions.0.transformer_blocks.0.attn_temp.to_q.weight", D2C)
    grouped = native.comfy_temporal(
        {
            "up_blocks.1.attentions.2.transformer_blocks.1.norm_temp.weight": torch.ones(2),
            "up_blocks.1.attentions.2.transformer_blocks.1.attn_temp.to_k.weight": torch.ones(2, 2),
        },
        D2C,
    )
    assert set(grouped) == {"output_blocks.5.1.transformer_blocks.1"}
    assert set(grouped["output_blocks.5.1.transformer_blocks.1"]) == {"norm_temp.weight", "attn_temp.to_k.weight"}


def test_attn1_patch_ids_follow_comfy_block_naming() -> None:
    assert native.attn1_patch_id("input_blocks.1.1.transformer_blocks.0") == ("input", 1, 0)
    assert native.attn1_patch_id("middle_block.1.transformer_blocks.3") == ("middle", 0, 3)
    assert native.attn1_patch_id("output_blocks.11.1.transformer_blocks.2") == ("output", 11, 2)
    with pytest.raises(ValueError):
        native.attn1_patch_id("out.0")


def test_video_norms_are_the_resnet_norms_and_the_output_norm() -> None:
    assert native.video_norm_paths(D2C) == ["input_blocks.1.0.in_layers.0", "input_blocks.1.0.out_layers.0", "out.0"]


def test_comfy_fingerprint_equals_the_pipeline_fingerprint() -> None:
    pipe = tiny_pipeline()
    sd = pipe.unet.state_dict()
    d2c = {k: "c." + k for k in sd} | {"down_blocks.9.resnets.0.conv_shortcut.weight": "c.absent"}
    comfy_sd = {"c." + k: v.clone() for k, v in sd.items()}
    assert native.comfy_fingerprint(comfy_sd, d2c) == weights.fingerprint(pipe.unet) == pipe.base_fingerprint
    comfy_sd["c.conv_in.weight"] = comfy_sd["c.conv_in.weight"] + 0.01
    assert native.comfy_fingerprint(comfy_sd, d2c) != pipe.base_fingerprint


def test_tuned_weights_from_pipeline_and_file_agree(tmp_path: Path) -> None:
    video = inflate(tiny_pipeline(), norm="frame")
    video = video.replace(info={"frames": 3})
    mem = native.tuned_from_pipeline(video)
    assert mem.norm == "frame" and mem.attention == "sparse_causal" and mem.frames == 3
    assert mem.fingerprint == video.base_fingerprint
    assert mem.temporal and mem.projections
    assert all(k.endswith(("attn1.to_q.weight", "attn2.to_q.weight")) for k in mem.projections)
    assert mem.temporal_bytes == sum(v.numel() * 4 for v in mem.temporal.values())
    weights.save_tuned(tmp_path / "t.safetensors", video)
    disk = native.tuned_from_file(tmp_path / "t.safetensors")
    assert (disk.norm, disk.attention, disk.fingerprint, disk.frames) == ("frame", "sparse_causal", mem.fingerprint, 3)
    assert set(disk.tensors) == set(mem.tensors)
    assert all(torch.equal(disk.tensors[k], mem.tensors[k]) for k in mem.tensors)
    with pytest.raises(ValueError, match="not inflated"):
        native.tuned_from_pipeline(tiny_pipeline())


def test_unknown_key_sets_and_norms_are_refused() -> None:
    """A key set or norm the native patch does not know must not silently run as something else."""
    with pytest.raises(ValueError, match="unknown attention/norm 'sparse_causal_next'/'video'"):
        native.TunedWeights(tensors={}, attention="sparse_causal_next")
    with pytest.raises(ValueError, match="norm one of video, frame"):
        native.TunedWeights(tensors={}, norm="first_window")
    assert native.TunedWeights(tensors={}, attention="sparse_causal_self").attention == "sparse_causal_self"
