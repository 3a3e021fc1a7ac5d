"""Inflation: equivalence with the 2-D UNet, reference key layout, no mutation of the input."""

import copy
import re

import pytest
import torch
from diffusers import UNet2DConditionModel
from einops import rearrange

from tav.attention import FrameContext
from tav.inflation import (
    VideoGroupNorm,
    VideoUNet,
    inflate,
    load_reference_unet,
    share_weights_copy,
    temporal_state_dict,
    transformer_blocks,
)
from tav.pipeline import Pipeline
from tav.tuning import DEFAULT_TRAINABLE, trainable_names

from .tiny import tiny_pipeline, tiny_unet

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
    assert set(temporal_state_dict(video.unet)) == new


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
    with pytest.raises(ValueError, match="^this pipeline is already inflated; inflate the 2-D pipeline it came from$"):
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


def _pooled_norm(frames: int):  # noqa: ANN202 - a forward hook
    """Forward hook: replace a 2-D GroupNorm's output by the norm pooled over each video's frames (written out)."""

    def hook(m: torch.nn.GroupNorm, args: tuple, out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        g = rearrange(x, "(b f) (g c) h w -> b g (f c h w)", f=frames, g=m.num_groups)
        y = (g - g.mean(-1, keepdim=True)) / (g.var(-1, unbiased=False, keepdim=True) + m.eps).sqrt()
        y = rearrange(y, "b g (f c h w) -> (b f) (g c) h w", f=frames, h=x.shape[-2], w=x.shape[-1])
        return y * m.weight[:, None, None] + m.bias[:, None, None]

    return hook


@pytest.mark.parametrize("frames", [2, 3])
def test_video_norm_is_the_references_resnet_and_output_norms_pooled_over_frames(frames: int) -> None:
    """The whole inflated UNet against the 2-D one whose resnet norms and ``conv_norm_out`` pool over each
    video's frames (the reference's 5-D GroupNorm; its transformers' norms stay per frame). Cross-frame
    attention is off and temporal attention adds exactly 0, so the norms are all that couples frames.
    The GroupNorms get eps 1e-2 so a norm that forgot its own eps is seen."""
    p2 = tiny_pipeline(seed=3)
    for m in p2.unet.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.eps = 1e-2
    video = inflate(p2, attention="frame", zero_temporal_bias=True)
    x = torch.randn(2, 4, frames, 8, 8, generator=torch.Generator().manual_seed(0))
    x[1] = 4 * x[1] + 1
    emb = _emb(p2, 2)
    with torch.no_grad():
        got = video.unet(x, 400, emb)
        per_frame = p2.unet(rearrange(x, "b c f h w -> (b f) c h w"), 400, emb.repeat_interleave(frames, 0)).sample
        norms = [m for n, m in p2.unet.named_modules() if re.search(r"resnets\.\d+\.norm[12]$|^conv_norm_out$", n)]
        hooks = [m.register_forward_hook(_pooled_norm(frames)) for m in norms]
        try:
            want = p2.unet(rearrange(x, "b c f h w -> (b f) c h w"), 400, emb.repeat_interleave(frames, 0)).sample
        finally:
            for h in hooks:
                h.remove()
    want = rearrange(want, "(b f) c h w -> b c f h w", f=frames)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (got - rearrange(per_frame, "(b f) c h w -> b c f h w", f=frames)).abs().max() > 1e-3  # pooling matters
    framewise = inflate(p2, attention="frame", zero_temporal_bias=True, norm="frame")
    with torch.no_grad():
        torch.testing.assert_close(
            framewise.unet(x, 400, emb), rearrange(per_frame, "(b f) c h w -> b c f h w", f=frames)
        )


def test_each_block_adds_temporal_attention_across_frames_after_its_feed_forward(pipe) -> None:
    """A transformer block's output is the 2-D block's plus ``attn_temp(norm_temp(.))``, attention over the
    frames at each spatial position (multi-head, no positional encoding), written out here."""
    video = inflate(pipe, attention="frame")
    block, twin = transformer_blocks(video.unet.unet)[0], transformer_blocks(pipe.unet)[0]
    t = block.attn_temp
    assert t.heads == block.attn1.heads and t.to_q.weight.shape == block.attn1.to_q.weight.shape  # as the reference
    with torch.no_grad():
        t.to_out[0].weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    f, n, d = 3, 16, block.norm_temp.normalized_shape[0]
    gen = torch.Generator().manual_seed(2)
    x, ehs = torch.randn(2 * f, n, d, generator=gen), torch.randn(2 * f, 77, 32, generator=gen)
    video.unet.ctx.frames = f
    with torch.no_grad():
        got = block(x, encoder_hidden_states=ehs)
        base = twin(x, encoder_hidden_states=ehs)
        h = rearrange(block.norm_temp(base), "(b f) n d -> (b n) f d", f=f)
        q, k, v = (rearrange(proj(h), "bn f (H e) -> bn H f e", H=t.heads) for proj in (t.to_q, t.to_k, t.to_v))
        w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        o = t.to_out[0](rearrange(w @ v, "bn H f e -> bn f (H e)"))
        want = base + rearrange(o, "(b n) f d -> (b f) n d", n=n)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (got - base).abs().max() > 1e-2


def test_unet_keyword_arguments_reach_the_2d_unet(pipe) -> None:
    """ControlNet residuals are passed through: one frame with an exact-identity temporal layer is the 2-D UNet."""
    video = inflate(pipe, zero_temporal_bias=True)
    x, emb = torch.randn(1, 4, 1, 8, 8), _emb(pipe)
    down, mid = _residual_shapes(pipe, x[:, :, 0], emb)
    gen = torch.Generator().manual_seed(0)
    kw = {
        "down_block_additional_residuals": tuple(torch.randn(s, generator=gen) for s in down),
        "mid_block_additional_residual": torch.randn(mid, generator=gen),
    }
    with torch.no_grad():
        got = video.unet(x, 400, emb, **kw)[:, :, 0]
        want = pipe.unet(x[:, :, 0], 400, emb, **kw).sample
        plain = video.unet(x, 400, emb)[:, :, 0]
    assert (got - want).abs().max().item() <= ATOL
    assert (got - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"VideoUNet expects \[batch, channels, frames, h, w\], got \(1, 4, 8, 8\)"):
        video.unet(x[:, :, 0], 400, emb)


def _residual_shapes(pipe: Pipeline, x: torch.Tensor, emb: torch.Tensor) -> tuple[list[tuple], tuple]:
    """The shapes of the down-block and mid-block residuals a ControlNet gives this UNet: the outputs of
    conv_in, of every down resnet and downsampler, and of the mid block (recorded from a 2-D forward)."""
    down: list[tuple] = []
    mid: list[tuple] = []
    modules = [pipe.unet.conv_in] + [m for b in pipe.unet.down_blocks for m in [*b.resnets, *(b.downsamplers or [])]]
    hooks = [m.register_forward_hook(lambda m, a, o: down.append(tuple(o.shape))) for m in modules]
    hooks.append(pipe.unet.mid_block.register_forward_hook(lambda m, a, o: mid.append(tuple(o.shape))))
    try:
        with torch.no_grad():
            pipe.unet(x, 400, emb)
    finally:
        for h in hooks:
            h.remove()
    return down, mid[0]


def test_inflate_records_its_options_and_refuses_unknown_ones(pipe) -> None:
    """The options are stored on the UNet (tuned files record them, loaders check them) and checked first."""
    video = inflate(pipe, norm="frame", attention="sparse_causal_self")
    assert (video.unet.norm, video.unet.attention) == ("frame", "sparse_causal_self")
    with pytest.raises(ValueError, match="norm must be one of video, frame, got 'videos'"):
        inflate(pipe, norm="videos")
    with pytest.raises(ValueError, match="attention must be one of sparse_causal, sparse_causal_self, frame, got 'x'"):
        inflate(pipe, attention="x")


def test_unets_without_self_attention_blocks_are_refused() -> None:
    plain = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type=None, cross_attention_dim=32,
    )  # fmt: skip
    with pytest.raises(
        ValueError, match="^the UNet has no transformer blocks: Tune-A-Video needs a cross-attention UNet$"
    ):
        inflate(Pipeline(plain, None, None, None, {}))
    cross_only = UNet2DConditionModel(**{**tiny_unet().config, "only_cross_attention": True})
    with pytest.raises(
        ValueError, match=r"^UNets whose attn1 is cross-attention \(only_cross_attention\) are not supported$"
    ):
        inflate(Pipeline(cross_only, None, None, None, {}))


def test_temporal_layers_follow_the_unet(pipe) -> None:
    """They are seeded (the default seed is 0), trainable even when inflated under inference mode (as
    ComfyUI runs nodes), in the UNet's dtype, and upcast their attention where the UNet's does (SD 2.1)."""
    a, b = temporal_state_dict(inflate(pipe).unet), temporal_state_dict(inflate(pipe, seed=0).unet)
    c = temporal_state_dict(inflate(pipe, seed=1).unet)
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    with torch.inference_mode():
        video = inflate(pipe)
    assert not any(t.is_inference() for t in temporal_state_dict(video.unet).values())
    half = Pipeline(tiny_unet(seed=3).to(torch.bfloat16), None, None, None, {})
    assert {t.dtype for t in temporal_state_dict(inflate(half).unet).values()} == {torch.bfloat16}
    upcast = UNet2DConditionModel(**{**tiny_unet().config, "upcast_attention": True})
    blocks = transformer_blocks(inflate(Pipeline(upcast, None, None, None, {})).unet.unet)
    assert all(b.attn_temp.upcast_attention for b in blocks)


def test_inflating_fake_tensors_builds_without_moving_them() -> None:
    """The memory planner inflates a UNet made of fake tensors (Module.to cannot move those)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        video = inflate(Pipeline(tiny_unet(), None, None, None, {}))
    assert len(temporal_state_dict(video.unet)) > 0


def test_share_weights_copy_shares_all_but_what_it_is_told_to_copy() -> None:
    """What nodes rely on to return a new model without copying (or mutating) the frozen weights."""
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    m[1].weight.requires_grad_(False)
    copy = share_weights_copy(m, [m[0].weight, m[1].weight])
    assert copy[0].bias is m[0].bias and copy[1].bias is m[1].bias
    for own, orig in ((copy[0].weight, m[0].weight), (copy[1].weight, m[1].weight)):
        assert own is not orig and own.data_ptr() != orig.data_ptr() and torch.equal(own, orig)
        assert isinstance(own, torch.nn.Parameter) and own.requires_grad == orig.requires_grad
    with torch.inference_mode():
        loaded = torch.nn.Linear(3, 3)  # as a loader under ComfyUI's inference mode makes it
    assert share_weights_copy(loaded).weight is loaded.weight  # shared unless asked
    trainable = share_weights_copy(loaded, copy_inference=True)
    assert not trainable.weight.is_inference() and torch.equal(trainable.weight, loaded.weight)
    with torch.inference_mode():
        made_inside = share_weights_copy(m, [m[0].weight])
    assert not made_inside[0].weight.is_inference()
    norm = torch.nn.BatchNorm1d(3)
    own_buffer = share_weights_copy(norm, [norm.running_mean])
    assert "running_mean" in dict(own_buffer.named_buffers()) and len(list(own_buffer.parameters())) == 2
    assert own_buffer.running_mean is not norm.running_mean and own_buffer.weight is norm.weight


def test_load_reference_unet_loads_every_weight_strictly(pipe) -> None:
    """An official checkpoint is a whole inflated UNet's state dict: loaded into a copy, the input untouched."""
    source = inflate(pipe, seed=5)
    sd = source.unet.unet.state_dict()
    x, emb = torch.randn(1, 4, 3, 8, 8), _emb(pipe)
    for start in (pipe, inflate(pipe)):
        loaded = load_reference_unet(start, sd)
        with torch.no_grad():
            torch.testing.assert_close(loaded.unet(x, 400, emb), source.unet(x, 400, emb))
    inflated = inflate(pipe)
    before = {k: v.clone() for k, v in inflated.unet.unet.state_dict().items()}
    before_2d = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    load_reference_unet(inflated, sd)
    assert all(torch.equal(v, inflated.unet.unet.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, pipe.unet.state_dict()[k]) for k, v in before_2d.items())
    temporal = sorted(k for k in sd if "attn_temp" in k)
    missing = {k: v for k, v in sd.items() if k not in temporal[:4]}
    with pytest.raises(ValueError, match=r"^the checkpoint does not match this UNet's architecture: 4 missing keys "
                       r"\(e\.g\. \['[^']+attn_temp[^']+', '[^']+', '[^']+'\]\), 0 unexpected \(e\.g\. \[\]\)$"):  # fmt: skip
        load_reference_unet(pipe, missing)
    extra = {**sd, **{f"extra{i}.weight": torch.zeros(1) for i in range(4)}}
    with pytest.raises(ValueError, match=r"0 missing keys \(e\.g\. \[\]\), 4 unexpected \(e\.g\. \['extra0\.weight', "
                       r"'extra1\.weight', 'extra2\.weight'\]\)$"):  # fmt: skip
        load_reference_unet(pipe, extra)
    assert load_reference_unet(pipe, sd, norm="frame").unet.norm == "frame"


def test_a_timestep_per_batch_a_single_one_or_a_scalar_mean_the_same(pipe) -> None:
    video = inflate(pipe)
    x, emb = torch.randn(2, 4, 3, 8, 8), _emb(pipe, 2)
    with torch.no_grad():
        want = video.unet(x, 400, emb)
        for t in (torch.tensor(400), torch.tensor([400]), torch.tensor([400, 400])):
            torch.testing.assert_close(video.unet(x, t, emb), want)
        per_video = video.unet(x, torch.tensor([400, 10]), emb)
        torch.testing.assert_close(per_video[1:], video.unet(x[1:], 10, emb[1:]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_first_window_statistics_are_recorded_then_reused(dtype: torch.dtype) -> None:
    """Windowed steps with shared norms: the window holding frame 0 normalises as without windows and
    records its statistics; later windows are normalised with those (written out here), in their dtype."""
    from tav.attention import SharedFrame

    source = torch.nn.GroupNorm(2, 4, eps=1e-2)
    torch.nn.init.normal_(source.weight), torch.nn.init.normal_(source.bias)
    ctx = FrameContext(3, SharedFrame(norm=True, record=True))
    norm = VideoGroupNorm(copy.deepcopy(source).to(dtype), ctx)
    plain = VideoGroupNorm(source, FrameContext(3))
    gen = torch.Generator().manual_seed(0)
    first, later = torch.randn(3, 4, 5, 7, generator=gen), 3 * torch.randn(3, 4, 5, 7, generator=gen) + 1
    with torch.no_grad():
        got_first = norm(first.to(dtype))
        tol = 1e-5 if dtype == torch.float32 else 0.05
        torch.testing.assert_close(got_first.float(), plain(first), rtol=tol, atol=tol)
        ctx.shared.record = False
        got = norm(later.to(dtype))
    groups = first.view(3, 2, 2, 5, 7).transpose(0, 1).reshape(2, -1)
    mean, var = groups.mean(-1), groups.var(-1, unbiased=False)
    want = (later.view(3, 2, 2, 5, 7) - mean.view(1, 2, 1, 1, 1)) / (var.view(1, 2, 1, 1, 1) + 1e-2).sqrt()
    want = want.view(3, 4, 5, 7) * source.weight.view(1, 4, 1, 1) + source.bias.view(1, 4, 1, 1)
    assert got.dtype == dtype and got.shape == (3, 4, 5, 7)
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)
    with pytest.raises(RuntimeError, match=r"^windowed step: statistics batch 1 != window batch 3$"):
        norm(torch.randn(9, 4, 5, 7).to(dtype))
    fresh = VideoGroupNorm(source, FrameContext(3, SharedFrame(norm=True, record=False)))
    with pytest.raises(RuntimeError, match=r"^windowed step: the window holding frame 0 must run first in every step$"):
        fresh(later)
