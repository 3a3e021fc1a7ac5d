"""Long clips in windows: spans, fusion, equivalence with one pass, the frame-0 anchor, ControlNet hints."""

import argparse

import pytest
import torch
from einops import repeat

from tav import ddim
from tav.attention import FrameContext, SharedFrame
from tav.control import Control
from tav.inflation import VideoGroupNorm, inflate
from tav.windows import (
    Windows,
    add_cli_options,
    even_picks,
    from_cli,
    fused_prediction,
    fusion_weights,
    window_control,
)

from .test_control import _controlnet
from .tiny import tiny_pipeline


@pytest.fixture(scope="module")
def pipe2d():
    return tiny_pipeline(seed=5)


@pytest.fixture(scope="module")
def video(pipe2d):
    return inflate(pipe2d)


def test_spans_cover_the_clip_with_full_windows() -> None:
    assert Windows(8, 2).spans(32) == [(0, 8), (6, 14), (12, 20), (18, 26), (24, 32)]
    assert Windows(8, 0).spans(32) == [(0, 8), (8, 16), (16, 24), (24, 32)]
    assert Windows(8, 2).spans(8) == [(0, 8)]
    assert Windows(4, 1).spans(9) == [(0, 4), (3, 7), (5, 9)]  # the last window moves back to end the clip
    for f in range(6, 30):
        spans = Windows(6, 4).spans(f)
        assert spans[0][0] == 0 and spans[-1][1] == f
        assert all(e - s == 6 for s, e in spans)
        assert all(b[0] <= a[1] for a, b in zip(spans, spans[1:], strict=False))


@pytest.mark.parametrize(("length", "overlap", "frames"), [(8, 2, 32), (4, 1, 9), (8, 6, 11), (3, 0, 9), (5, 4, 5)])
def test_fusion_weights_sum_to_one_and_ramp(length: int, overlap: int, frames: int) -> None:
    spans = Windows(length, overlap).spans(frames)
    weights = fusion_weights(spans, frames)
    total = torch.zeros(frames)
    for (s, e), w in zip(spans, weights, strict=True):
        total[s:e] += w
        assert bool((w > 0).all())
    torch.testing.assert_close(total, torch.ones(frames), rtol=0, atol=1e-6)
    if len(spans) == 1:
        assert torch.equal(weights[0], torch.ones(length))  # one window: exactly the un-windowed output


def test_two_frame_windows_are_allowed() -> None:
    assert Windows(2, 1).spans(3) == [(0, 2), (1, 3)]
    assert Windows(2).spans(4) == [(0, 2), (2, 4)]


@pytest.mark.parametrize(
    ("spans", "frames", "want"),
    [
        ([(0, 4), (2, 6)], 6, [[1, 1, 2 / 3, 1 / 3], [1 / 3, 2 / 3, 1, 1]]),
        ([(0, 3), (2, 5)], 5, [[1, 1, 1 / 2], [1 / 2, 1, 1]]),  # overlap 1: one frame shared half and half
        ([(0, 3), (2, 5), (4, 7)], 7, [[1, 1, 1 / 2], [1 / 2, 1, 1 / 2], [1 / 2, 1, 1]]),  # ramps on both sides
        ([(0, 3), (3, 6)], 6, [[1, 1, 1], [1, 1, 1]]),  # no overlap: each frame from its own window
    ],
)
def test_fusion_weights_written_out(spans: list, frames: int, want: list) -> None:
    got = fusion_weights(spans, frames)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, torch.tensor(w, dtype=torch.float32))


def test_windows_leaving_a_gap_are_a_bug_not_a_black_frame() -> None:
    with pytest.raises(AssertionError, match="leave frames uncovered"):
        fusion_weights([(0, 2), (3, 5)], 5)


def test_fusing_identical_predictions_gives_them_back_exactly() -> None:
    """Weights sum to 1 per frame (to float32 precision, their type), and fusion keeps the model's dtype."""
    x = torch.randn(1, 2, 11, 3, 3, dtype=torch.float64)
    got = fused_prediction(lambda xw, cw: xw * 3, x, Windows(4, 2))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, x * 3, rtol=1e-6, atol=1e-6)


def test_anchor_and_shared_norm_each_take_effect_without_the_other(video) -> None:
    """Every window setting changes the later windows (never the first, which runs as without windows)."""
    torch.manual_seed(4)
    x = torch.randn(1, 4, 6, 8, 8)
    emb = video.encode_prompt("a blue circle")
    out = {
        (anchor, norm): ddim.predict_windows(video, x, 400, emb, None, Windows(3, 0, anchor=anchor, norm=norm))
        for anchor in (True, False)
        for norm in ("window", "first_window")
    }
    first = out[(False, "window")][:, :, :3]
    for a, b in [((False, "first_window"), (False, "window")), ((False, "first_window"), (True, "first_window"))]:
        torch.testing.assert_close(out[a][:, :, :3], first)
        assert (out[a][:, :, 3:] - out[b][:, :, 3:]).abs().max() > 1e-3, (a, b)


def test_window_control_refuses_a_hint_of_another_length(pipe2d) -> None:
    """Windows slice the hint by clip frame: a hint of another length is refused, not silently sliced."""
    control = Control(_controlnet(pipe2d.unet, randomize=False), torch.rand(4, 64, 64, 3))
    with pytest.raises(ValueError, match="hint has 4 frames but the clip has 6"):
        window_control(control, 0, 3, 6)
    assert torch.equal(window_control(control, 1, 3, 4).hint, control.hint[1:3])


def test_overlap_ramp_values() -> None:
    w = fusion_weights(Windows(8, 2).spans(14), 14)
    torch.testing.assert_close(w[0][-2:], torch.tensor([2 / 3, 1 / 3]))
    torch.testing.assert_close(w[1][:2], torch.tensor([1 / 3, 2 / 3]))
    assert torch.equal(w[0][:6], torch.ones(6)) and torch.equal(w[1][2:], torch.ones(6))


@pytest.mark.parametrize(
    ("kwargs", "frames", "message"),
    [
        ({"length": 1}, 8, "at least 2"),
        ({"length": 0}, 8, "at least 2"),
        ({"length": 4, "overlap": 4}, 8, "smaller than the window"),
        ({"length": 4, "overlap": 6}, 8, "smaller than the window"),
        ({"length": 4, "overlap": -1}, 8, "at least 0"),
        ({"length": 4, "norm": "clip"}, 8, "window norm must be one of window, first_window, got 'clip'"),
        ({"length": 9}, 8, "longer than the clip"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict, frames: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Windows(**kwargs).spans(frames)


def test_window_longer_than_clip_fails_before_any_compute(video) -> None:
    calls = []

    def cb(step: int, total: int) -> None:
        calls.append(step)

    with pytest.raises(ValueError, match=r"window \(9 frames\) is longer than the clip \(6 frames\)"):
        ddim.sample(video, video.encode_prompt("x"), latents=torch.randn(1, 4, 6, 8, 8), steps=2, windows=Windows(9))
    with pytest.raises(ValueError, match="longer than the clip"):
        ddim.invert(video, torch.randn(1, 4, 6, 8, 8), steps=2, callback=cb, windows=Windows(9))
    assert calls == []


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_one_window_as_long_as_the_clip_is_bit_identical(prediction_type: str) -> None:
    video = inflate(tiny_pipeline(seed=6, prediction_type=prediction_type))
    torch.manual_seed(0)
    lat = torch.randn(1, 4, 5, 8, 8)
    emb = video.encode_prompt("a red circle")
    inv = ddim.invert(video, lat, steps=2)
    out = ddim.sample(video, emb, latents=inv, steps=2, guidance_scale=6.0)
    for anchor, norm in [(True, "window"), (False, "window"), (True, "first_window")]:
        one = Windows(5, 2, anchor=anchor, norm=norm)
        assert torch.equal(ddim.invert(video, lat, steps=2, windows=one), inv), (anchor, norm)
        assert torch.equal(ddim.sample(video, emb, latents=inv, steps=2, guidance_scale=6.0, windows=one), out)
        # and several windows really change the result (the comparison above is not vacuous)
        many = Windows(3, 1, anchor=anchor, norm=norm)
        assert (
            ddim.sample(video, emb, latents=inv, steps=2, guidance_scale=6.0, windows=many) - out
        ).abs().max() > 1e-3


def test_one_window_with_controlnet_is_bit_identical(pipe2d, video) -> None:
    control = Control(_controlnet(pipe2d.unet, randomize=True), torch.rand(4, 64, 64, 3), scale=0.7)
    lat = torch.randn(1, 4, 4, 8, 8)
    emb = video.encode_prompt("a blue square")
    a = ddim.sample(video, emb, latents=lat, steps=2, guidance_scale=3.0, control=control)
    b = ddim.sample(video, emb, latents=lat, steps=2, guidance_scale=3.0, control=control, windows=Windows(4, 1))
    assert torch.equal(a, b)


def _causal_model(pipe2d):
    """Per-frame GroupNorm and temporal layers that add exactly 0: a frame's output then depends
    only on its own input and its sparse-causal keys, so the anchor's effect can be checked exactly."""
    return inflate(pipe2d, norm="frame", zero_temporal_bias=True)


def test_anchored_window_is_the_reference_on_frame0_plus_window(pipe2d) -> None:
    """Window [3, 6) anchored on frame 0 == the one-pass model on frames [0, 3, 4, 5] (frame 0 dropped),
    without the anchor == the one-pass model on frames [3, 4, 5]."""
    model = _causal_model(pipe2d)
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 8, 8)  # a CFG-sized batch
    emb = model.encode_prompt(["", "a red circle"])
    anchored = ddim.predict_windows(model, x, 501, emb, None, Windows(3, 0, anchor=True))
    free = ddim.predict_windows(model, x, 501, emb, None, Windows(3, 0, anchor=False))
    want_anchored = ddim.predict(model, x[:, :, [0, 3, 4, 5]], 501, emb)[:, :, 1:]
    want_free = ddim.predict(model, x[:, :, 3:6], 501, emb)
    torch.testing.assert_close(anchored[:, :, 3:], want_anchored, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(free[:, :, 3:], want_free, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(anchored[:, :, :3], free[:, :, :3], rtol=0, atol=0)  # window 0 is the same
    assert (anchored[:, :, 3:] - free[:, :, 3:]).abs().max() > 1e-3


def test_anchor_is_computed_once_per_step_not_per_window(video) -> None:
    """No extra pass for frame 0: the UNet sees exactly the windows' frames, and the later windows
    read the keys/values the first one stored."""
    seen = []
    handle = video.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    ctx = video.unet.ctx
    stored = []
    try:
        fused_prediction(
            lambda xw, cw: (stored.append(len(ctx.shared.kv)), ddim.predict(video, xw, 300, video.encode_prompt("")))[
                1
            ],
            torch.randn(1, 4, 12, 8, 8),
            Windows(4, 0),
            ctx=ctx,
        )
    finally:
        handle.remove()
    assert seen == [4, 4, 4]
    with torch.no_grad():  # what is kept is frame 0 alone, not a view into the whole window (memory)
        share = SharedFrame()
        ctx.shared, ctx.frames = share, 4
        attn = next(m for n, m in video.unet.unet.named_modules() if n.endswith("attn1"))
        attn(torch.randn(4, 16, attn.query_dim))
        ctx.shared = None
    for t in share.kv[id(attn)]:
        assert t.shape == (1, 16, attn.inner_dim) and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    n_attn1 = sum(1 for n, _ in video.unet.unet.named_modules() if n.endswith("attn1"))
    assert stored == [0, n_attn1, n_attn1]  # recorded by window 0, shared with windows 1 and 2
    assert ctx.shared is None  # nothing leaks into later un-windowed calls


def test_independent_windows_equal_separate_chunks(video) -> None:
    """Without anchor, overlap 0 and per-window GroupNorm, windows are independent 8-frame chunks."""
    torch.manual_seed(2)
    x = torch.randn(1, 4, 6, 8, 8)
    emb = video.encode_prompt("a green triangle")
    got = ddim.predict_windows(video, x, 400, emb, None, Windows(3, 0, anchor=False))
    want = torch.cat([ddim.predict(video, x[:, :, s : s + 3], 400, emb) for s in (0, 3)], dim=2)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_first_window_groupnorm_statistics_are_shared() -> None:
    torch.manual_seed(3)
    ctx = FrameContext(frames=3)
    norm = VideoGroupNorm(torch.nn.GroupNorm(2, 4), ctx)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    a, b = torch.randn(3, 4, 5, 5) * 2 + 1, torch.randn(3, 4, 5, 5)
    plain_a = norm(a)
    ctx.shared = SharedFrame(anchor=False, norm=True, record=True)
    assert torch.equal(norm(a), plain_a)  # the first window normalises as without windows
    ctx.shared.record = False
    got = norm(b)
    ctx.shared = None
    xa = a.view(3, 2, 2, 5, 5).transpose(0, 1).reshape(2, -1)  # group-major: (group, c f h w)
    mean, var = xa.mean(1), xa.var(1, unbiased=False)
    xb = b.view(3, 2, 2, 5, 5)
    want = (xb - mean.view(1, 2, 1, 1, 1)) / (var.view(1, 2, 1, 1, 1) + norm.eps).sqrt()
    want = want.view(3, 4, 5, 5) * norm.weight.view(1, 4, 1, 1) + norm.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (norm(b) - got).abs().max() > 1e-2  # its own statistics differ: the sharing matters


def test_each_window_controlnet_sees_its_own_hint_frames(pipe2d, video) -> None:
    cn = _controlnet(pipe2d.unet, randomize=True)
    hint = torch.rand(7, 64, 64, 3)
    hints_seen = []
    handle = cn.register_forward_pre_hook(
        lambda m, args, kwargs: hints_seen.append(kwargs["controlnet_cond"].clone()), with_kwargs=True
    )
    try:
        ddim.sample(
            video,
            video.encode_prompt("a red square"),
            latents=torch.randn(1, 4, 7, 8, 8),
            steps=1,
            guidance_scale=2.0,
            control=Control(cn, hint),
            windows=Windows(4, 1),
        )
    finally:
        handle.remove()
    spans = Windows(4, 1).spans(7)
    assert len(hints_seen) == len(spans) == 2
    for (s, e), got in zip(spans, hints_seen, strict=True):
        assert torch.equal(got, repeat(hint[s:e], "f h w c -> (b f) c h w", b=2))  # uncond + cond


def test_hint_frame_count_must_match_the_clip(pipe2d, video) -> None:
    control = Control(_controlnet(pipe2d.unet, randomize=False), torch.rand(4, 64, 64, 3))
    with pytest.raises(ValueError, match=r"hint has 4 frame\(s\) but the video has 6"):
        ddim.sample(
            video,
            video.encode_prompt("x"),
            latents=torch.randn(1, 4, 6, 8, 8),
            steps=1,
            control=control,
            windows=Windows(3, 1),
        )


def test_progress_counts_windows_and_cancel_stops_between_windows(video) -> None:
    calls = []
    ddim.invert(
        video, torch.randn(1, 4, 7, 8, 8), steps=2, callback=lambda s, t: calls.append((s, t)), windows=Windows(4, 1)
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Cancel(Exception):
        pass

    def stop(step: int, total: int) -> None:
        if step == 1:
            raise Cancel

    with pytest.raises(Cancel):
        ddim.invert(video, torch.randn(1, 4, 7, 8, 8), steps=2, callback=stop, windows=Windows(4, 1))
    assert video.unet.ctx.shared is None


def test_2d_pipeline_takes_windows_too(pipe2d) -> None:
    """The per-frame baseline has nothing to share; windows only split the batch."""
    x = torch.randn(1, 4, 5, 8, 8)
    emb = pipe2d.encode_prompt("a red circle")
    a = ddim.predict(pipe2d, x, 200, emb)
    b = ddim.predict_windows(pipe2d, x, 200, emb, None, Windows(3, 1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_even_picks() -> None:
    assert even_picks(32, 8) == [0, 4, 9, 13, 18, 22, 27, 31]
    assert even_picks(8, 8) == list(range(8))
    assert even_picks(5, 1) == [0]
    with pytest.raises(ValueError, match="cannot pick 5 of 4 frames"):
        even_picks(4, 5)


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        ([], None),
        (["--window", "8"], Windows(8, 2)),  # overlap defaults to a quarter window, anchored, own norms
        (["--window", "8", "--overlap", "0"], Windows(8, 0)),
        (["--window", "6", "--overlap", "3", "--no-anchor", "--window-norm", "first_window"],
         Windows(6, 3, anchor=False, norm="first_window")),
    ],
)  # fmt: skip
def test_cli_options_give_the_windows_asked_for(argv: list[str], want: Windows | None) -> None:
    parser = argparse.ArgumentParser()
    add_cli_options(parser)
    got = from_cli(parser.parse_args(argv))
    assert got == want
    if want is not None:
        assert got.spans(16) == want.spans(16)  # whole-frame overlaps: the clip splits as asked


def test_cli_refuses_overlap_without_window_and_unknown_norms() -> None:
    parser = argparse.ArgumentParser()
    add_cli_options(parser)
    with pytest.raises(ValueError, match="^--overlap needs --window$"):
        from_cli(parser.parse_args(["--overlap", "2"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--window", "4", "--window-norm", "clip"])
