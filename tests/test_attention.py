"""Sparse-causal and temporal attention against naive formulas written out here."""

import copy

import pytest
import torch
from diffusers.models.attention_processor import Attention

from tav.attention import (
    ATTENTION_MODES,
    FrameContext,
    SharedFrame,
    SparseCausalAttnProcessor,
    TemporalAttnProcessor,
    key_frame_index,
    sparse_causal_index,
)


def _naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head, materialising the scores (what we avoid in the processor)."""
    n, dim = q.shape
    d = dim // heads
    out = []
    for h in range(heads):
        qs, ks, vs = (t[:, h * d : (h + 1) * d] for t in (q, k, v))
        w = torch.softmax(qs @ ks.T / d**0.5, dim=-1)
        out.append(w @ vs)
    return torch.cat(out, dim=-1)


def _attn(dim: int = 16, heads: int = 4, seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    a = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False).double()
    torch.nn.init.normal_(a.to_out[0].bias)
    return a.eval()


def test_index_matches_reference() -> None:
    assert sparse_causal_index(1).tolist() == [0]
    assert sparse_causal_index(5).tolist() == [0, 0, 1, 2, 3]


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("batch", [1, 2])
def test_sparse_causal_equals_naive(frames: int, batch: int) -> None:
    a = _attn()
    ctx = FrameContext(frames)
    a.set_processor(SparseCausalAttnProcessor(ctx))
    x = torch.randn(batch * frames, 6, 16, dtype=torch.float64)
    got = a(x)
    q, k, v = a.to_q(x), a.to_k(x), a.to_v(x)
    want = torch.empty_like(got)
    for b in range(batch):
        for i in range(frames):
            j = b * frames
            prev = j + max(i - 1, 0)
            keys = torch.cat([k[j], k[prev]])  # frame 0 then frame i-1 (frame 0 for i = 0, 1)
            vals = torch.cat([v[j], v[prev]])
            want[j + i] = a.to_out[0](_naive_attention(q[j + i], keys, vals, a.heads))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_current_frame_not_in_own_keys_for_later_frames() -> None:
    """Frame i >= 2 attends to frames 0 and i-1 only: its own tokens reach its output through the query,
    never through keys/values (stock attention of frame i's tokens over frames 0 and i-1 is the answer)."""
    a = _attn()
    stock = copy.deepcopy(a)  # same weights, diffusers' own processor: attention over given keys
    a.set_processor(SparseCausalAttnProcessor(FrameContext(4)))
    x = torch.randn(4, 6, 16, dtype=torch.float64)
    out = a(x)
    for i in (2, 3):
        keys = torch.cat([x[0], x[i - 1]])[None]
        torch.testing.assert_close(out[i : i + 1], stock(x[i : i + 1], encoder_hidden_states=keys))
    with_self = stock(x[3:4], encoder_hidden_states=torch.cat([x[0], x[2], x[3]])[None])
    assert (out[3:4] - with_self).abs().max() > 1e-3  # the check can tell the two key sets apart


def test_frame_mode_is_plain_self_attention() -> None:
    a = _attn()
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    want = a(x)  # stock processor: per-frame self-attention
    a.set_processor(SparseCausalAttnProcessor(FrameContext(3), mode="frame"))
    torch.testing.assert_close(a(x), want)


@pytest.mark.parametrize("frames", [1, 4, 7])
def test_temporal_equals_naive(frames: int) -> None:
    a = _attn(seed=1)
    a.set_processor(TemporalAttnProcessor(FrameContext(frames)))
    batch, tokens = 2, 5
    x = torch.randn(batch * frames, tokens, 16, dtype=torch.float64)
    got = a(x)
    xv = x.view(batch, frames, tokens, 16)
    want = torch.empty_like(xv)
    for b in range(batch):
        for n in range(tokens):
            seq = xv[b, :, n]  # the f frames at one spatial position
            want[b, :, n] = a.to_out[0](_naive_attention(a.to_q(seq), a.to_k(seq), a.to_v(seq), a.heads))
    torch.testing.assert_close(got, want.view_as(got), rtol=1e-10, atol=1e-10)


def test_temporal_is_permutation_equivariant() -> None:
    """No positional encoding, as the reference: permuting frames permutes the output."""
    a = _attn(seed=2)
    a.set_processor(TemporalAttnProcessor(FrameContext(4)))
    x = torch.randn(4, 3, 16, dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(a(x)[perm], a(x[perm]))


def test_key_frames_per_mode() -> None:
    """Which frames each frame attends to, as sets: the reference's, with the current frame, none."""
    got = {m: [sorted(set(r)) for r in key_frame_index(m, 4).tolist()] for m in ATTENTION_MODES}
    assert got["sparse_causal"] == [[0], [0], [0, 1], [0, 2]]
    assert got["sparse_causal_self"] == [[0], [0, 1], [0, 1, 2], [0, 2, 3]]
    assert got["frame"] == [[0], [1], [2], [3]]
    with pytest.raises(ValueError, match="sparse_causal_self"):
        key_frame_index("causal", 4)


@pytest.mark.parametrize("frames", [1, 2, 3, 5])
@pytest.mark.parametrize("batch", [1, 2])
def test_sparse_causal_self_equals_naive_over_distinct_key_frames(frames: int, batch: int) -> None:
    """Frame i attends once to each of frames {0, i-1, i}: padding repeats (frame 1's [0, 0, 1]) weigh as one."""
    a = _attn()
    a.set_processor(SparseCausalAttnProcessor(FrameContext(frames), mode="sparse_causal_self"))
    x = torch.randn(batch * frames, 6, 16, dtype=torch.float64)
    got = a(x)
    q, k, v = a.to_q(x), a.to_k(x), a.to_v(x)
    want = torch.empty_like(got)
    for b in range(batch):
        j = b * frames
        for i in range(frames):
            src = [j + f for f in sorted({0, max(i - 1, 0), i})]
            want[j + i] = a.to_out[0](_naive_attention(q[j + i], k[src].flatten(0, 1), v[src].flatten(0, 1), a.heads))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_self_mode_anchored_window_is_the_model_on_frame0_plus_window() -> None:
    """Long clips: with "sparse_causal_self" too, window [3, 6) anchored on frame 0 == the one-pass
    model on frames [0, 3, 4, 5] with frame 0 dropped (per-frame GroupNorm, temporal layers adding 0)."""
    from tav import ddim
    from tav.inflation import inflate
    from tav.windows import Windows

    from .tiny import tiny_pipeline

    model = inflate(tiny_pipeline(seed=5), norm="frame", attention="sparse_causal_self", zero_temporal_bias=True)
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 8, 8)
    emb = model.encode_prompt(["", "a red circle"])
    anchored = ddim.predict_windows(model, x, 501, emb, None, Windows(3, 0, anchor=True))
    want = ddim.predict(model, x[:, :, [0, 3, 4, 5]], 501, emb)[:, :, 1:]
    torch.testing.assert_close(anchored[:, :, 3:], want, rtol=1e-5, atol=1e-5)
    reference = inflate(tiny_pipeline(seed=5), norm="frame", zero_temporal_bias=True)
    assert (ddim.predict(reference, x, 501, emb) - ddim.predict(model, x, 501, emb)).abs().max() > 1e-3


def test_unknown_key_set_is_a_clear_error_before_compute() -> None:
    from tav.editing import EditConfig, check_edit_config
    from tav.inflation import inflate
    from tav.validation import InputError

    from .tiny import tiny_pipeline

    with pytest.raises(InputError, match="sparse_causal_self"):
        check_edit_config(EditConfig(attention="self"))
    with pytest.raises(ValueError, match="attention must be one of"):
        inflate(tiny_pipeline(seed=5), attention="self")


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_recording_window_attends_as_without_windows(frames: int) -> None:
    """The window holding frame 0 records the anchor and attends exactly as an un-windowed pass."""
    a = _attn()
    ctx = FrameContext(frames)
    a.set_processor(SparseCausalAttnProcessor(ctx))
    x = torch.randn(frames, 6, 16, dtype=torch.float64)
    want = a(x)
    ctx.shared = SharedFrame()
    torch.testing.assert_close(a(x), want)
    assert len(ctx.shared.kv) == 1


def test_sparse_causal_refuses_a_context() -> None:
    """attn1 is self-attention: a context (attn2's text) given to it is a wiring bug, not a silent mix."""
    a = _attn()
    a.set_processor(SparseCausalAttnProcessor(FrameContext(2)))
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="^sparse-causal attention is self-attention: it takes no context or mask$"):
        a(x, encoder_hidden_states=x)


@pytest.mark.parametrize(
    "variant",
    [{"norm_num_groups": 4}, {"qk_norm": "layer_norm"}, {"residual_connection": True, "rescale_output_factor": 2.0}],
)
@pytest.mark.parametrize("image_input", [False, True])
def test_attention_variants_match_diffusers_per_frame(variant: dict, image_input: bool) -> None:
    """Other UNets' attn1 (group norm, q/k norm, residual, 4-D image input): with one frame the
    sparse-causal processor is diffusers' own attention, in every variant."""
    torch.manual_seed(0)
    a = Attention(query_dim=16, heads=4, dim_head=4, bias=True, **variant).double().eval()
    x = torch.randn(2, 16, 2, 3, dtype=torch.float64) if image_input else torch.randn(2, 6, 16, dtype=torch.float64)
    want = a(x)
    a.set_processor(SparseCausalAttnProcessor(FrameContext(1)))
    torch.testing.assert_close(a(x), want)


def test_spatial_norm_attention_matches_diffusers_per_frame() -> None:
    """An attn1 with a spatial norm (conditioned on ``temb``, as in VAE-style blocks) is normalised
    before attention, as diffusers does: with one frame the processor is diffusers' own attention."""
    torch.manual_seed(0)
    a = Attention(query_dim=32, heads=4, dim_head=8, bias=True, spatial_norm_dim=3).double().eval()
    x, temb = torch.randn(2, 32, 2, 3, dtype=torch.float64), torch.randn(2, 3, 1, 1, dtype=torch.float64)
    want = a(x, temb=temb)
    assert (want - a(x, temb=temb + 1)).abs().max() > 1e-3  # temb matters: the norm is not a no-op here
    a.set_processor(SparseCausalAttnProcessor(FrameContext(1)))
    torch.testing.assert_close(a(x, temb=temb), want)


def test_frame_mode_ignores_a_windowed_steps_anchor() -> None:
    """The "frame" ablation has no cross-frame keys, so in a windowed step it neither records frame 0
    nor needs it: a later window (nothing recorded) is still plain per-frame self-attention."""
    a = _attn()
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    want = a(x)
    ctx = FrameContext(3)
    a.set_processor(SparseCausalAttnProcessor(ctx, mode="frame"))
    for record in (True, False):
        ctx.shared = SharedFrame(record=record)
        torch.testing.assert_close(a(x), want)
        assert ctx.shared.kv == {}


def test_windowed_step_errors_say_what_went_wrong() -> None:
    """A later window before the recording one, or an anchor of another batch, names the fault."""
    a = _attn()
    ctx = FrameContext(3)  # 3 frames, 2 videos: the batch is not the frame count
    a.set_processor(SparseCausalAttnProcessor(ctx))
    x = torch.randn(6, 6, 16, dtype=torch.float64)
    ctx.shared = SharedFrame(record=False)
    with pytest.raises(RuntimeError, match="^windowed step: the window holding frame 0 must run first in every step$"):
        a(x)
    ctx.shared = SharedFrame()
    a(x[:3])  # records an anchor of batch 1
    ctx.shared.record = False
    with pytest.raises(RuntimeError, match=r"^windowed step: anchor batch 1 != window batch 2$"):
        a(x)


@pytest.mark.parametrize("make", [key_frame_index, lambda mode, f: SparseCausalAttnProcessor(FrameContext(f), mode)])
def test_unknown_mode_message_lists_every_mode(make) -> None:
    with pytest.raises(ValueError) as e:
        make("self", 3)
    assert str(e.value) == "unknown attention mode 'self': use one of sparse_causal, sparse_causal_self, frame"
