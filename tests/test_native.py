"""Pure logic of the native path (tav.native): schedule, noise convention, key mapping, tuned weights.

No ComfyUI here; the ComfyUI side is tested on the live host (tests/e2e/test_e2e_native.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

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
    norm, to_k = torch.ones(2), torch.ones(2, 2)
    grouped = native.comfy_temporal(
        {
            "up_blocks.1.attentions.2.transformer_blocks.1.norm_temp.weight": norm,
            "up_blocks.1.attentions.2.transformer_blocks.1.attn_temp.to_k.weight": to_k,
        },
        D2C,
    )
    assert grouped == {
        "output_blocks.5.1.transformer_blocks.1": {"norm_temp.weight": norm, "attn_temp.to_k.weight": to_k}
    }


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


# --- tuned weights: selection, metadata, defaults of older files ------------------------------


def test_tuned_weights_split_temporal_from_projections_and_count_their_bytes() -> None:
    """temporal_bytes is what the patched MODEL adds to memory: element sizes count (bf16 is 2 bytes)."""
    tw = native.TunedWeights(
        tensors={
            "b.transformer_blocks.0.attn_temp.to_q.weight": torch.zeros(3, 2, dtype=torch.bfloat16),
            "b.transformer_blocks.0.norm_temp.bias": torch.zeros(5),
            "b.transformer_blocks.0.attn1.to_q.weight": torch.zeros(7, 7),
        }
    )
    assert set(tw.temporal) == {"b.transformer_blocks.0.attn_temp.to_q.weight", "b.transformer_blocks.0.norm_temp.bias"}
    assert set(tw.projections) == {"b.transformer_blocks.0.attn1.to_q.weight"}
    assert tw.temporal_bytes == 3 * 2 * 2 + 5 * 4
    assert native.TunedWeights(tensors={}).temporal_bytes == 0


def test_unknown_attention_or_norm_message_lists_the_known_ones() -> None:
    for kwargs in ({"attention": "full"}, {"norm": "window"}, {"attention": "full", "norm": "window"}):
        with pytest.raises(ValueError) as info:
            native.TunedWeights(tensors={}, **kwargs)
        attention, norm = kwargs.get("attention", "sparse_causal"), kwargs.get("norm", "video")
        assert str(info.value) == (
            f"unknown attention/norm {attention!r}/{norm!r}: attention is one of"
            " sparse_causal, sparse_causal_self, frame, norm one of video, frame"
        )


def test_tuned_from_pipeline_keeps_the_pipelines_modules_source_and_prediction_type() -> None:
    """The projections are the pipeline's own trainable modules, not the default set."""
    pipe = tiny_pipeline(seed=1, prediction_type="v_prediction")
    video = inflate(pipe, attention="frame").replace(info={"trainable_modules": ["attn2.to_q"]})
    tw = native.tuned_from_pipeline(video)
    assert tw.projections and all(k.endswith("attn2.to_q.weight") for k in tw.projections)
    assert tw.temporal
    assert (tw.attention, tw.norm, tw.source, tw.prediction_type) == ("frame", "video", "tiny-random-1", "v_prediction")
    assert tw.frames == 0  # not recorded: unknown
    params = dict(video.unet.unet.named_parameters())
    for k, t in tw.tensors.items():
        assert t.device.type == "cpu" and not t.requires_grad
        assert t.data_ptr() != params[k].data_ptr()  # a copy: later tuning does not change it


def test_tuned_from_pipeline_refuses_a_2d_pipeline_with_what_to_connect() -> None:
    with pytest.raises(ValueError) as info:
        native.tuned_from_pipeline(tiny_pipeline())
    assert str(info.value) == "the pipeline is not inflated: connect Tune, Load Tuned or Inflate"


def test_tuned_from_file_reads_the_source_and_prediction_type(tmp_path: Path) -> None:
    video = inflate(tiny_pipeline(seed=2, prediction_type="v_prediction"), norm="frame", attention="sparse_causal_self")
    weights.save_tuned(tmp_path / "t.safetensors", video)
    tw = native.tuned_from_file(str(tmp_path / "t.safetensors"))
    assert (tw.norm, tw.attention, tw.source, tw.prediction_type, tw.frames) == (
        "frame",
        "sparse_causal_self",
        "tiny-random-2",
        "v_prediction",
        0,
    )
    assert tw.fingerprint == video.base_fingerprint


def test_tuned_file_without_the_optional_metadata_gets_the_defaults(tmp_path: Path) -> None:
    """Files that record only the required fields (older versions) load as epsilon, source and frames unknown."""
    meta = {"format": weights.FORMAT, "base_fingerprint": "abc", "trainable_modules": "[]", "norm": "video"}
    meta["attention"] = "sparse_causal"
    path = tmp_path / "old.safetensors"
    save_file({"b.transformer_blocks.0.attn_temp.to_q.weight": torch.ones(2, 2)}, str(path), metadata=meta)
    tw = native.tuned_from_file(path)
    assert (tw.fingerprint, tw.source, tw.prediction_type, tw.frames) == ("abc", "", "epsilon", 0)
    assert set(tw.temporal) == {"b.transformer_blocks.0.attn_temp.to_q.weight"}


def test_missing_tuned_file_is_not_found(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.safetensors", tmp_path):
        with pytest.raises(FileNotFoundError) as info:
            native.tuned_from_file(path)
        assert str(info.value) == f"tuned weights not found: {path}"


# --- key mapping: refusals and explicit block maps --------------------------------------------


def test_block_of_is_the_transformer_block_prefix() -> None:
    assert native.block_of("up_blocks.1.attentions.2.transformer_blocks.13.attn_temp.to_q.weight") == (
        "up_blocks.1.attentions.2.transformer_blocks.13"
    )
    with pytest.raises(ValueError) as info:
        native.block_of("conv_in.weight")
    assert str(info.value) == "conv_in.weight is not inside a transformer block"


def test_block_map_pairs_only_keys_inside_blocks_on_both_sides() -> None:
    assert native.block_map(D2C) == {
        "down_blocks.0.attentions.0.transformer_blocks.0": "input_blocks.1.1.transformer_blocks.0",
        "mid_block.attentions.0.transformer_blocks.0": "middle_block.1.transformer_blocks.0",
        "up_blocks.1.attentions.2.transformer_blocks.1": "output_blocks.5.1.transformer_blocks.1",
    }
    assert native.block_map({"a.transformer_blocks.0.w": "b.w", "a.w": "b.transformer_blocks.0.w"}) == {}


def test_comfy_key_uses_a_given_block_map() -> None:
    """Callers map many keys with one precomputed block map; it is used as given."""
    key = "mid_block.attentions.0.transformer_blocks.0.attn_temp.to_q.weight"
    blocks = {"mid_block.attentions.0.transformer_blocks.0": "middle_block.9.transformer_blocks.4"}
    assert native.comfy_key(key, D2C, blocks) == "middle_block.9.transformer_blocks.4.attn_temp.to_q.weight"
    with pytest.raises(KeyError):
        native.comfy_key(key, D2C, {})


def test_a_projection_the_model_lacks_is_refused_even_in_a_known_block() -> None:
    """Only temporal keys are new; any other unmapped key means another architecture."""
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    with pytest.raises(KeyError) as info:
        native.comfy_key(key, D2C)
    assert info.value.args[0] == (f"no ComfyUI key for {key}: the tuned weights do not match this model's architecture")


def test_temporal_tensors_of_an_unknown_block_are_refused() -> None:
    with pytest.raises(KeyError) as info:
        native.comfy_temporal({"down_blocks.3.attentions.0.transformer_blocks.0.norm_temp.weight": torch.ones(1)}, D2C)
    assert info.value.args[0] == (
        "no ComfyUI transformer block for down_blocks.3.attentions.0.transformer_blocks.0:"
        " the tuned weights do not match this model"
    )


def test_unexpected_block_paths_are_refused_with_the_path() -> None:
    for path in ("out.0", "input_blocks.1.transformer_blocks.0", "middle_block.1.transformer_blocks.0.attn1"):
        with pytest.raises(ValueError) as info:
            native.attn1_patch_id(path)
        assert str(info.value) == f"unexpected transformer block path {path}"


# --- schedule and noise convention: values, offsets, shapes, dtypes ---------------------------


def test_sigma_table_is_sqrt_of_noise_over_signal_in_double() -> None:
    s = native.sigmas_from_alphas(torch.tensor([0.5, 0.2, 0.1], dtype=torch.float32))
    assert s.dtype == torch.float64
    assert torch.allclose(s, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), rtol=1e-6)


def test_reference_sigmas_follow_the_offset_and_are_float32() -> None:
    """The offset (steps_offset of the scheduler config) shifts every timestep; 0 ends exactly at t=0."""
    for offset in (0, 1, 2):
        ts = ddim.ddim_timesteps(1000, 10, offset)
        s = native.reference_sigmas(SIGMAS, 10, offset)
        assert s.dtype == torch.float32
        assert torch.allclose(s.double(), SIGMAS[ts if ts[-1] == 0 else ts + [0]], rtol=1e-6)
        assert native.first_sigma(SIGMAS, 10, offset) == pytest.approx(float(SIGMAS[ts[0]]), rel=1e-6)
    assert native.reference_sigmas(SIGMAS, 10, 0).shape == (10,)  # t = 900..0: no zero-length last step
    assert native.reference_sigmas(SIGMAS, 10, 1).shape == (11,)


def test_latent_conversion_refuses_batches_and_wrong_ranks() -> None:
    for shape in [(2, 4, 3, 5, 6), (1, 4, 3, 5), (1, 1, 4, 3, 5, 6)]:
        with pytest.raises(ValueError) as info:
            native.vp_to_comfy_latent(torch.zeros(shape), 1.0, 1.0)
        assert str(info.value) == f"expected one video's latents [1, C, F, h, w], got {shape}"
    for shape in [(1, 4, 3, 5, 6), (4, 5, 6)]:
        with pytest.raises(ValueError) as info:
            native.comfy_latent_to_vp(torch.zeros(shape), 1.0, 1.0)
        assert str(info.value) == f"expected LATENT samples [frames, C, h, w], got {shape}"


def test_latent_conversion_scales_by_noise_level_and_vae_factor() -> None:
    """VP -> LATENT multiplies by sqrt(1 + sigma^2) / scale; back divides; layouts [1,C,F,h,w] <-> [F,C,h,w]."""
    x = torch.arange(2 * 3 * 1 * 2, dtype=torch.float32).reshape(1, 2, 3, 1, 2)
    lat = native.vp_to_comfy_latent(x, 3.0, 0.5)  # sqrt(10) / 0.5
    assert lat.shape == (3, 2, 1, 2) and lat.is_contiguous()
    assert torch.allclose(lat, x[0].permute(1, 0, 2, 3) * 10**0.5 * 2)
    vp = native.comfy_latent_to_vp(lat.to(torch.bfloat16), 3.0, 0.5)
    assert vp.shape == (1, 2, 3, 1, 2) and vp.dtype == torch.float32 and vp.is_contiguous()
    assert torch.allclose(vp, x, rtol=1e-2)  # bf16 in, float32 out
    assert native.vp_to_comfy_latent(x.to(torch.bfloat16), 0.0, 1.0).dtype == torch.float32


def test_temporal_param_count_sums_elements() -> None:
    assert native.temporal_param_count([torch.zeros(2, 3), torch.zeros(4, dtype=torch.bfloat16)]) == 10
    assert native.temporal_param_count(iter([])) == 0
