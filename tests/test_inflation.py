"""Inflation: equivalence with the 2-D UNet, reference key layout, no mutation of the input."""

import re

import pytest
import torch
from diffusers import UNet2DConditionModel

from tav.attention import FrameContext
from tav.inflation import VideoGroupNorm, VideoUNet, inflate, temporal_state_dict
from tav.tuning import DEFAULT_TRAINABLE, trainable_names

from .tiny import tiny_pipeline

ATOL = 1e-5  # float32; measured max |diff| is 0 for one frame and ~1e-6 for identical frames


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=3)


def _emb(pipe, n: int = 1) -> torch.Tensor:
    torch.manual_seed(7)
    return torch.randn(n, 77, pipe.unet.config.cross_attention_dim)


@pytest.mark.parametrize("norm", ["video", "frame"])
def test_one_frame_equals_2d(pipe, norm: str) -> None:
    video = inflate(pipe, norm=norm, zero_temporal_bias=True)
    x = torch.randn(2, 4, 1, 8, 8)
    emb = _emb(pipe, 2)
    with torch.no_grad():
        got = video.unet(x, torch.tensor([10, 700]), emb)[:, :, 0]
        want = pipe.unet(x[:, :, 0], torch.tensor([10, 700]), emb).sample
    assert (got - want).abs().max().item() <= ATOL


@pytest.mark.parametrize("norm", ["video", "frame"])
@pytest.mark.parametrize("frames", [2, 5])
def test_identical_frames_equal_2d(pipe, norm: str, frames: int) -> None:
    video = inflate(pipe, norm=norm, zero_temporal_bias=True)
    x1 = torch.randn(1, 4, 8, 8)
    emb = _emb(pipe)
    with torch.no_grad():
        got = video.unet(x1[:, :, None].expand(-1, -1, frames, -1, -1).contiguous(), 400, emb)
        want = pipe.unet(x1, 400, emb).sample
    for f in range(frames):
        assert (got[:, :, f] - want).abs().max().item() <= ATOL


def test_reference_bias_init_is_not_identity(pipe) -> None:
    """The reference zeroes only to_out's weight; its random bias makes step 0 differ from 2-D."""
    video = inflate(pipe)
    x = torch.randn(1, 4, 1, 8, 8)
    with torch.no_grad():
        diff = video.unet(x, 400, _emb(pipe))[:, :, 0] - pipe.unet(x[:, :, 0], 400, _emb(pipe)).sample
    assert diff.abs().max().item() > 1e-4
    for k, v in temporal_state_dict(video.unet).items():
        if k.endswith("attn_temp.to_out.0.weight"):
            assert torch.count_nonzero(v) == 0


def test_video_norm_pools_over_frames_of_each_video(pipe) -> None:
    """The reference's 5-D GroupNorm: statistics over (channels of a group, all frames, h, w) of ONE video,
    written out here; never across the videos of a batch (CFG's cond and uncond are two videos)."""
    source = torch.nn.GroupNorm(2, 4)
    torch.nn.init.normal_(source.weight), torch.nn.init.normal_(source.bias)
    norm = VideoGroupNorm(source, FrameContext(3))
    x = torch.randn(2, 4, 3, 5, 5)
    x[1] = 10 * x[1] + 3  # the second video on another scale
    groups = x.view(2, 2, 2 * 3 * 5 * 5)
    mean, var = groups.mean(-1, keepdim=True), groups.var(-1, unbiased=False, keepdim=True)
    want = ((groups - mean) / (var + source.eps).sqrt()).view_as(x)
    want = want * source.weight.view(1, 4, 1, 1, 1) + source.bias.view(1, 4, 1, 1, 1)
    with torch.no_grad():
        got = norm(x.transpose(1, 2).reshape(6, 4, 5, 5)).view(2, 3, 4, 5, 5).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_videos_of_a_batch_are_independent(pipe) -> None:
    """Two videos in one batch give what each gives alone: nothing in the UNet mixes videos."""
    video = inflate(pipe, norm="video")
    x = torch.randn(2, 4, 3, 8, 8)
    x[1] = 5 * x[1] + 1
    emb = _emb(pipe, 2)
    with torch.no_grad():
        both = video.unet(x, 400, emb)
        alone = torch.cat([video.unet(x[i : i + 1], 400, emb[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-5)


def test_keys_are_diffusers_plus_reference_temporal_keys(pipe) -> None:
    video = inflate(pipe)
    base = set(pipe.unet.state_dict())
    keys = set(video.unet.unet.state_dict())
    assert base <= keys
    new = keys - base
    pattern = re.compile(
        r"^(down_blocks|up_blocks)\.\d+\.attentions\.\d+\.transformer_blocks\.\d+\."
        r"(attn_temp\.(to_q|to_k|to_v)\.weight|attn_temp\.to_out\.0\.(weight|bias)|norm_temp\.(weight|bias))$"
        r"|^mid_block\.attentions\.\d+\.transformer_blocks\.\d+\."
        r"(attn_temp\.(to_q|to_k|to_v)\.weight|attn_temp\.to_out\.0\.(weight|bias)|norm_temp\.(weight|bias))$"
    )
    assert new and all(pattern.match(k) for k in new), sorted(new)[:5]
    n_blocks = sum(1 for k in new if k.endswith("norm_temp.weight"))
    assert len(new) == 7 * n_blocks


def test_input_pipeline_untouched_and_weights_shared(pipe) -> None:
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    processors = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    video = inflate(pipe)
    assert isinstance(video.unet, VideoUNet) and not isinstance(pipe.unet, VideoUNet)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == processors
    assert not any("attn_temp" in k for k in pipe.unet.state_dict())
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(v, before[k])
    shared = pipe.unet.conv_in.weight.data_ptr() == video.unet.unet.conv_in.weight.data_ptr()
    assert shared, "inflation must share the frozen weights, not copy them"


def test_inflate_twice_is_refused(pipe) -> None:
    with pytest.raises(ValueError, match="already inflated"):
        inflate(inflate(pipe))


def _sd15_trainable_count(train_temporal_bias: bool = True) -> int:
    cfg = dict(
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    from tav.pipeline import Pipeline

    video = inflate(Pipeline(unet, None, None, None, {}))
    params = dict(video.unet.named_parameters())
    names = trainable_names(video.unet, DEFAULT_TRAINABLE)
    return sum(params[n].numel() for n in names), len([m for m in names if m.endswith("norm_temp.weight")])


def test_sd15_trainable_count_matches_formula() -> None:
    """6 d^2 + d per transformer block, 16 blocks (5 at 320, 5 at 640, 6 at 1280): 74.4M."""
    count, _ = _sd15_trainable_count()
    dims = [320] * 5 + [640] * 5 + [1280] * 6
    assert count == sum(6 * d * d + d for d in dims)
    assert round(count / 1e6, 1) == 74.4
