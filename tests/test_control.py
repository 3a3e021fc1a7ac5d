"""ControlNet per frame: no-op when zero, the 2-D computation per frame, original-layout loading."""

import copy
import math

import pytest
import torch
from diffusers import ControlNetModel

from tav import ddim
from tav.control import Control, controlnet_from_ldm, fit_hint, percent_sigma, schedule_sigma
from tav.inflation import inflate

from .test_checkpoints import unet_to_ldm
from .tiny import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=21)


def _controlnet(unet, randomize: bool) -> ControlNetModel:
    torch.manual_seed(0)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)).eval()
    if randomize:  # from_unet zero-initialises the output convs: make them act
        with torch.no_grad():
            for name, p in cn.named_parameters():
                if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "conv_out" in name:
                    p.normal_(0, 0.05)
    return cn


def test_zero_controlnet_changes_nothing(pipe) -> None:
    video = inflate(pipe)
    hint = torch.rand(3, 64, 64, 3)
    x = torch.randn(1, 4, 3, 8, 8)
    emb = pipe.encode_prompt("a red circle")
    plain = ddim.sample(video, emb, latents=x, steps=2, guidance_scale=4.0)
    ctl = ddim.sample(
        video,
        emb,
        latents=x,
        steps=2,
        guidance_scale=4.0,
        control=Control(_controlnet(pipe.unet, randomize=False), hint),
    )
    torch.testing.assert_close(plain, ctl, rtol=0, atol=1e-6)


def test_one_frame_equals_2d_controlnet(pipe) -> None:
    """Inflated UNet + per-frame ControlNet on one frame == diffusers' 2-D ControlNet computation == the 2-D pipeline."""
    video = inflate(pipe, zero_temporal_bias=True)
    cn = _controlnet(pipe.unet, randomize=True)
    hint = torch.rand(1, 64, 64, 3)
    x = torch.randn(1, 4, 1, 8, 8)
    emb = pipe.encode_prompt("a blue square")
    got = ddim.predict(video, x, 500, emb, Control(cn, hint, scale=0.8))
    with torch.no_grad():
        down, mid = cn(x[:, :, 0], 500, emb, hint.permute(0, 3, 1, 2), conditioning_scale=0.8, return_dict=False)
        want = pipe.unet(
            x[:, :, 0], 500, emb, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
    assert (got[:, :, 0] - want).abs().max().item() < 1e-5
    assert (got[:, :, 0] - ddim.predict(video, x, 500, emb)[:, :, 0]).abs().max().item() > 1e-3  # it acts
    per_frame = ddim.predict(pipe, x, 500, emb, Control(cn, hint, scale=0.8))  # the 2-D pipeline (baseline)
    assert (per_frame[:, :, 0] - want).abs().max().item() < 1e-5


def test_schedule_window_is_a_percent_of_the_noise_schedule(pipe) -> None:
    """ComfyUI's start/end percent: a step acts while its sigma lies between the sigmas at start and end
    (timesteps (1 - percent) x 999); with 5 DDIM steps (timesteps 801, 601, 401, 201, 1), 0.2-0.6 keeps
    timesteps 601 and 401 only (a fraction of the steps would also keep 201)."""
    from tav.ddim import _schedule

    cn = _controlnet(pipe.unet, randomize=True)
    ac, ts, _, _ = _schedule(pipe, 5)
    assert ts == [801, 601, 401, 201, 1]
    c = Control(cn, torch.rand(2, 64, 64, 3), start=0.2, end=0.6)
    assert [c.active(t, ac) for t in ts] == [False, True, True, False, False]
    # the same noise levels whatever the step count
    ac, ts, _, _ = _schedule(pipe, 50)
    assert [t for t in ts if c.active(t, ac)] == [t for t in ts if 399.6 <= t <= 799.2]
    assert all(Control(cn, c.hint).active(t, ac) for t in ts)  # 0-1: every step, the last included
    assert not Control(cn, c.hint, scale=0.0).active(ts[0], ac)
    assert not any(Control(cn, c.hint, start=0.5, end=0.5).active(t, ac) for t in ts)


def test_schedule_sigma_by_hand(pipe) -> None:
    from tav.ddim import _schedule

    ac = _schedule(pipe, 5)[0]
    for t in (0, 1, 500, 999):
        assert schedule_sigma(ac, t) == pytest.approx(((1 - float(ac[t])) / float(ac[t])) ** 0.5, rel=1e-12)
    # between whole timesteps: geometric mean at the half
    mid = (schedule_sigma(ac, 400) * schedule_sigma(ac, 401)) ** 0.5
    assert schedule_sigma(ac, 400.5) == pytest.approx(mid, rel=1e-12)
    assert percent_sigma(ac, 0.0) == math.inf and percent_sigma(ac, 1.0) == 0.0
    assert percent_sigma(ac, 0.25) == pytest.approx(schedule_sigma(ac, 0.75 * 999), rel=1e-12)


def test_fit_hint_crops_to_the_aspect_then_resizes_nearest() -> None:
    """Stock Apply ControlNet's handling of a hint of another size: a centre crop to the frame's aspect
    ratio, then nearest-exact (hand-computed on index images)."""
    idx = torch.arange(6 * 4, dtype=torch.float32).reshape(1, 1, 4, 6)  # 4 rows x 6 columns
    same = fit_hint(idx, 4, 6)
    assert same is idx
    # 2x down: nearest-exact picks rows/columns 0.5+2k -> 1, 3 (floor of (i + 0.5) * 2)
    assert fit_hint(idx, 2, 3).squeeze().tolist() == [[7, 9, 11], [19, 21, 23]]
    # a square frame from a 6-wide, 4-high hint: one column trimmed at each side, then 4x4 kept as is
    assert fit_hint(idx, 4, 4).squeeze().tolist() == idx[0, 0, :, 1:5].tolist()
    # a wide frame from a tall hint: rows trimmed top and bottom
    tall = idx.transpose(-1, -2)  # 6 rows x 4 columns
    assert fit_hint(tall, 2, 4).squeeze().tolist() == tall[0, 0, 2:4, :].tolist()


def controlnet_to_ldm(cn: ControlNetModel, unet) -> dict:
    """The original layout (time_embed, input_blocks, middle_block, zero_convs, input_hint_block...)."""
    body = copy.deepcopy(unet)
    body.load_state_dict({k: v for k, v in cn.state_dict().items() if k in body.state_dict()}, strict=False)
    sd = {k.removeprefix("model.diffusion_model."): v for k, v in unet_to_ldm(body).items()}
    sd = {k: v for k, v in sd.items() if k.startswith(("time_embed.", "input_blocks.", "middle_block."))}
    for k, v in cn.state_dict().items():
        if k.startswith("controlnet_down_blocks."):
            i, p = k.split(".")[1:]
            sd[f"zero_convs.{i}.0.{p}"] = v
        elif k.startswith("controlnet_mid_block."):
            sd[f"middle_block_out.0.{k.split('.')[-1]}"] = v
        elif k.startswith("controlnet_cond_embedding."):
            part = k.split(".")[1:]
            idx = 0 if part[0] == "conv_in" else 14 if part[0] == "conv_out" else 2 * (int(part[1]) + 1)
            sd[f"input_hint_block.{idx}.{part[-1]}"] = v
    return {"control_model." + k: v for k, v in sd.items()}


@pytest.mark.parametrize("embedding", [(16, 32, 96, 256), (8, 16, 24, 48)])
def test_controlnet_from_original_layout(pipe, embedding: tuple[int, ...]) -> None:
    """Every tensor comes back, whatever the hint embedding's widths (read from the file, not assumed)."""
    torch.manual_seed(0)
    cn = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=embedding).eval()
    with torch.no_grad():
        for p in cn.parameters():
            p.normal_(0, 0.05)
    loaded = controlnet_from_ldm(controlnet_to_ldm(cn, pipe.unet), inflate(pipe).unet)
    a, b = cn.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError) as e:
        controlnet_from_ldm({"x": torch.zeros(1)}, pipe.unet)
    assert str(e.value) == "not a ControlNet state dict: it has no input_hint_block (T2I-Adapters are not supported)"


def test_a_hint_per_frame_or_a_refusal(pipe) -> None:
    """Two hints for a four-frame clip are refused (they used to be repeated over the frames silently)."""
    from tav.control import check_hint_frames
    from tav.validation import InputError

    control = Control(_controlnet(pipe.unet, randomize=False), torch.rand(2, 64, 64, 3))
    check_hint_frames(control, 2)
    with pytest.raises(InputError, match=r"hint has 2 frame\(s\) but the video has 4: give one hint image per frame"):
        check_hint_frames(control, 4)
    # and the library's own sampler refuses too, before any step (it used to repeat the 2 hints over 4 frames)
    video = inflate(pipe)
    emb = video.encode_prompt("a clip")
    with pytest.raises(InputError, match=r"hint has 2 frame\(s\) but the video has 4"):
        ddim.sample(video, emb, frames=4, height=64, width=64, steps=1, control=control)


def test_a_controlnet_for_another_base_model_is_named(pipe) -> None:
    """A ControlNet whose tensors do not fit the pipeline says which base model each is for, not torch's
    "size mismatch for ..."."""
    from tav.validation import InputError
    from tests.tiny import tiny_unet

    other = tiny_unet(seed=3, cross_dim=48)
    sd = controlnet_to_ldm(_controlnet(other, randomize=False), other)
    with pytest.raises(InputError) as info:
        controlnet_from_ldm(sd, inflate(pipe).unet)
    message = str(info.value)
    assert "size mismatch" not in message
    assert "made for another base (48-wide text embeddings, 32 channels in its first block)" in message
    assert "the pipeline's base model is another base (32-wide text embeddings, 32 channels" in message
    assert message.endswith("load a ControlNet made for this base model")
    # a file without the tensors that tell its base is still refused in words, not with a crash
    for lacking in ("attn2.to_k.weight", "control_model.input_blocks.0.0.weight"):
        partial = {k: v for k, v in sd.items() if not k.endswith(lacking)}
        with pytest.raises(InputError) as info:
            controlnet_from_ldm(partial, inflate(pipe).unet)
        assert str(info.value) == (
            "this ControlNet was made for an unknown base (the file has no cross-attention or first-block weights "
            "to tell), but the pipeline's base model is another base (32-wide text embeddings, 32 channels in its "
            "first block): load a ControlNet made for this base model"
        )


def test_schedule_sigma_clamps_and_interpolates_up_to_the_last_timestep(pipe) -> None:
    from tav.ddim import _schedule

    ac = _schedule(pipe, 5)[0]
    assert schedule_sigma(ac, 5000) == schedule_sigma(ac, 999) and schedule_sigma(ac, -3) == schedule_sigma(ac, 0)
    last = (schedule_sigma(ac, 998) * schedule_sigma(ac, 999)) ** 0.5
    assert schedule_sigma(ac, 998.5) == pytest.approx(last, rel=1e-12)


def test_start_and_end_percent_both_include_their_step(pipe) -> None:
    """A step exactly at the start or end percent's noise level is controlled (stock ComfyUI's rule)."""
    from tav.ddim import _schedule

    ac = _schedule(pipe, 5)[0]
    hint = torch.rand(1, 8, 8, 3)
    at = 0.5 * 999  # the timestep of 50 % of the schedule
    for start, end in [(0.5, 1.0), (0.0, 0.5), (0.5, 0.5)]:
        assert Control(None, hint, start=start, end=end).active(at, ac), (start, end)
    assert not Control(None, hint, start=0.5, end=0.5).active(at + 1, ac)


def test_a_wide_hint_keeps_its_centre() -> None:
    idx = torch.arange(8, dtype=torch.float32).repeat(2, 1).reshape(1, 1, 2, 8)  # 2 rows x 8 columns
    assert fit_hint(idx, 2, 4).squeeze().tolist() == [[2, 3, 4, 5]] * 2  # two columns trimmed at each side


def test_residuals_refuse_a_hint_of_another_frame_count() -> None:
    from tav.control import residuals

    with pytest.raises(ValueError) as e:
        residuals(Control(None, torch.rand(3, 8, 8, 3)), torch.zeros(4, 4, 1, 1), torch.tensor(1), torch.zeros(4, 1, 8))
    assert str(e.value) == "the ControlNet hint has 3 frames but the video has a different count"


def test_residuals_of_an_rgba_hint_on_non_square_frames_are_its_rgb_ones(pipe) -> None:
    """An alpha channel (a PNG hint) is dropped, and a non-square clip gets a hint of its own shape."""
    from tav.control import residuals

    cn = _controlnet(pipe.unet, randomize=True)
    rgba = torch.rand(2, 64, 96, 4)
    x = torch.randn(2, 4, 8, 12)
    emb = torch.randn(2, 77, pipe.unet.config.cross_attention_dim)
    with torch.no_grad():
        got = residuals(Control(cn, rgba), x, torch.tensor(500), emb)
        want = residuals(Control(cn, rgba[..., :3]), x, torch.tensor(500), emb)
    for a, b in zip(got["down_block_additional_residuals"], want["down_block_additional_residuals"], strict=True):
        assert torch.equal(a, b)
    assert got["down_block_additional_residuals"][0].shape[-2:] == (8, 12)  # the first residual: latent size


def test_controlnet_loads_for_2d_and_inflated_unets_frozen(pipe) -> None:
    cn = _controlnet(pipe.unet, randomize=True)
    sd = controlnet_to_ldm(cn, pipe.unet)
    flat, video = controlnet_from_ldm(sd, pipe.unet), controlnet_from_ldm(sd, inflate(pipe).unet)
    for loaded in (flat, video):
        assert all(torch.equal(v, cn.state_dict()[k]) for k, v in loaded.state_dict().items())
        assert not any(p.requires_grad for p in loaded.parameters())  # sampling keeps no graph for it


def test_a_controlnet_missing_tensors_is_refused_with_counts(pipe) -> None:
    sd = controlnet_to_ldm(_controlnet(pipe.unet, randomize=False), pipe.unet)
    for i in range(3):
        del sd[f"control_model.zero_convs.{i}.0.weight"]
    with pytest.raises(ValueError) as e:
        controlnet_from_ldm(sd, pipe.unet)
    assert str(e.value) == (
        "this ControlNet does not match the model's architecture (is it for SD 1.x vs 2.x?): 3 missing keys "
        "(e.g. ['controlnet_down_blocks.0.weight', 'controlnet_down_blocks.1.weight']), 0 unexpected (e.g. [])"
    )


def test_base_model_families_are_named() -> None:
    from tav.control import _base

    assert _base(768, 320) == "SD 1.x (768-wide text embeddings, 320 channels in its first block)"
    assert _base(1024, 320).startswith("SD 2.x (") and _base(2048, 320).startswith("SDXL (")
