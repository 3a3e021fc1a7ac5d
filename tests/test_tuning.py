"""One-shot tuning: what changes, what stays bit-identical, and that the loss goes down."""

import pytest
import torch

from tav.ddim import alphas_cumprod
from tav.inflation import inflate
from tav.tuning import TuneConfig, trainable_names, tune

from .tiny import tiny_pipeline


def _fixed_loss(pipe, latents: torch.Tensor, emb: torch.Tensor) -> float:
    """Mean epsilon-MSE over fixed timesteps and noise: comparable before and after tuning."""
    gen = torch.Generator().manual_seed(123)
    ac = alphas_cumprod(pipe.scheduler_config).float()
    total = 0.0
    with torch.no_grad():
        for t in (50, 250, 450, 650, 850):
            noise = torch.randn(latents.shape, generator=gen)
            a = ac[t]
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            total += torch.nn.functional.mse_loss(pipe.unet(noisy, t, emb), noise).item()
    return total / 5


@pytest.fixture(scope="module")
def setup():
    pipe = inflate(tiny_pipeline(seed=5), zero_temporal_bias=True)
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 4, 8, 8)
    emb = pipe.encode_prompt("a red circle moving right")
    return pipe, latents, emb


def test_only_configured_parameters_change(setup) -> None:
    pipe, latents, emb = setup
    before = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    cfg = TuneConfig(steps=3, lr=1e-3, gradient_checkpointing=True)
    result = tune(pipe, latents, emb, cfg)
    names = set(trainable_names(pipe.unet, cfg.trainable_modules))
    after = result.pipeline.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == names  # every trainable tensor moved; nothing else did
    assert all(
        k.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias")) for k in names
    )
    assert any("attn1.to_q" in k for k in names) and any("attn2.to_q" in k for k in names)
    assert not any("norm_temp" in k or "attn1.to_k" in k or "ff." in k for k in names)
    # the input pipeline is untouched, and the tuned one shares its frozen weights
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert pipe.unet.unet.conv_in.weight.data_ptr() == result.pipeline.unet.unet.conv_in.weight.data_ptr()
    assert result.trainable_params == sum(after[k].numel() for k in names)
    assert len(result.losses) == 3


def test_trainable_count_formula_tiny(setup) -> None:
    """6 d^2 + d per transformer block (q of attn1 and attn2, q/k/v/out of attn_temp, out bias)."""
    pipe, _, _ = setup
    params = dict(pipe.unet.named_parameters())
    n = sum(params[k].numel() for k in trainable_names(pipe.unet, TuneConfig().trainable_modules))
    dims = [b.attn1.query_dim for b in pipe.unet.modules() if hasattr(b, "attn_temp")]
    assert n == sum(6 * d * d + d for d in dims)


def test_loss_goes_down_on_fixed_clip(setup) -> None:
    pipe, latents, emb = setup
    before = _fixed_loss(pipe, latents, emb)
    result = tune(pipe, latents, emb, TuneConfig(steps=40, lr=2e-3, gradient_checkpointing=False, seed=1))
    after = _fixed_loss(result.pipeline, latents, emb)
    assert after < 0.9 * before, (before, after)


def test_custom_trainable_and_bad_names(setup) -> None:
    pipe, latents, emb = setup
    result = tune(pipe, latents, emb, TuneConfig(steps=1, trainable_modules=["attn_temp"]))
    assert result.trainable_params == sum(p.numel() for n, p in pipe.unet.named_parameters() if ".attn_temp." in n)
    with pytest.raises(ValueError, match="match no module"):
        tune(pipe, latents, emb, TuneConfig(steps=1, trainable_modules=["nonexistent"]))


def test_deterministic_with_seed(setup) -> None:
    pipe, latents, emb = setup
    a = tune(pipe, latents, emb, TuneConfig(steps=2, lr=1e-3, seed=9)).losses
    b = tune(pipe, latents, emb, TuneConfig(steps=2, lr=1e-3, seed=9)).losses
    assert a == b


def test_tunes_inference_tensors_as_comfyui_hands_them(setup) -> None:
    """ComfyUI runs nodes under inference_mode: weights and inputs made there must still train."""
    with torch.inference_mode():
        pipe = inflate(tiny_pipeline(seed=6))
        latents = torch.randn(1, 4, 2, 8, 8)
        emb = pipe.encode_prompt("a blue square")
        result = tune(pipe, latents, emb, TuneConfig(steps=2, lr=1e-3))
    before, after = pipe.unet.state_dict(), result.pipeline.unet.state_dict()
    names = trainable_names(pipe.unet, TuneConfig().trainable_modules)
    assert all(not torch.equal(before[k], after[k]) for k in names)  # every trainable tensor learned
    assert all(torch.isfinite(torch.tensor(result.losses)))


@pytest.mark.parametrize("seed", [4, 10])  # timesteps 921 (mostly noise) and 87 (mostly the clip)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_first_loss_is_the_mse_to_the_models_own_target(setup, prediction_type: str, seed: int) -> None:
    """The loss is the MSE to what the model predicts: the noise (epsilon) or v = sqrt(a) noise - sqrt(1-a) x0
    (SD 2.x-v). Step 1's loss, before any update, is rebuilt here from the seed's noise and timestep. Only
    the first row of the embedding is the caption (a batch of prompts would mean another model)."""
    pipe, latents, emb = setup
    pipe = pipe.replace(scheduler_config={**pipe.scheduler_config, "prediction_type": prediction_type})
    two = torch.cat([emb, torch.randn_like(emb)])
    loss = tune(pipe, latents, two, TuneConfig(steps=1, seed=seed, gradient_checkpointing=False)).losses[0]
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=gen)
    t = int(torch.randint(0, 1000, (1,), generator=gen))
    a = alphas_cumprod(pipe.scheduler_config).float()[t]
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    target = noise if prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * latents
    with torch.no_grad():
        pred = pipe.unet(noisy, torch.tensor([t]), emb)
    assert loss == pytest.approx(torch.nn.functional.mse_loss(pred, target).item(), rel=1e-4)


def test_cancel_from_callback_stops(setup) -> None:
    pipe, latents, emb = setup
    seen = []

    def cb(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune(pipe, latents, emb, TuneConfig(steps=50), callback=cb)
    assert seen == [1, 2]
    totals = []
    tune(pipe, latents, emb, TuneConfig(steps=2), callback=lambda step, total: totals.append((step, total)))
    assert totals == [(1, 2), (2, 2)]


def test_refuses_uninflated_pipeline() -> None:
    with pytest.raises(ValueError, match="inflate"):
        tune(tiny_pipeline(), torch.zeros(1, 4, 2, 8, 8), torch.zeros(1, 77, 32), TuneConfig(steps=1))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_path(setup, precision: str) -> None:
    """What CUDA runs by default, here on CPU autocast: frozen weights in half precision (copies,
    the input stays fp32), trained weights updated in fp32 masters, only they change."""
    pipe, latents, emb = setup
    half = torch.bfloat16 if precision == "bf16" else torch.float16
    cfg = TuneConfig(steps=3, lr=1e-3, precision=precision, gradient_checkpointing=True)
    result = tune(pipe, latents, emb, cfg)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    tuned = dict(result.pipeline.unet.named_parameters())
    names = set(trainable_names(pipe.unet, cfg.trainable_modules))
    assert {p.dtype for p in tuned.values()} == {half}  # ready to sample at the frozen weights' precision
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float32}  # the input is untouched
    base = dict(pipe.unet.named_parameters())
    changed = {n for n in names if not torch.equal(tuned[n].float(), base[n].to(half).float())}
    assert changed == names
    frozen_same = all(torch.equal(tuned[n], base[n].to(half)) for n in base if n not in names)
    assert frozen_same
    with torch.no_grad(), torch.autocast("cpu", dtype=half):
        out = result.pipeline.unet(latents, 10, emb)
    assert torch.isfinite(out.float()).all()


def _half_pipe(dtype: torch.dtype):
    """The tiny model loaded the way CUDA loads frozen weights: every weight in ``dtype``."""
    pipe = inflate(tiny_pipeline(seed=5), zero_temporal_bias=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.to(dtype)
    return pipe


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_auto_precision_shares_half_frozen_weights(setup, dtype: torch.dtype) -> None:
    """Frozen weights already in half precision are not copied: 'auto' autocasts to their type, so the
    tuned model holds the input's own frozen tensors (for SD1.5, 1.55 GiB not duplicated)."""
    _, latents, emb = setup
    pipe = _half_pipe(dtype)
    cfg = TuneConfig(steps=2, lr=1e-3, precision="auto", gradient_checkpointing=False)
    result = tune(pipe, latents, emb.to(dtype), cfg)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    names = set(trainable_names(pipe.unet, cfg.trainable_modules))
    base, tuned = dict(pipe.unet.named_parameters()), dict(result.pipeline.unet.named_parameters())
    copied = [n for n in base if n not in names and tuned[n].data_ptr() != base[n].data_ptr()]
    assert copied == [], f"tuning copied {len(copied)} frozen tensors, e.g. {copied[:3]}"
    assert {tuned[n].dtype for n in names} == {dtype}
    assert all(not torch.equal(tuned[n], base[n]) for n in names)  # trained, and not in place
    # a different explicit half type is honoured, at the price of copies (the rule the loaders avoid)
    other = torch.float16 if dtype == torch.bfloat16 else torch.bfloat16
    explicit = "fp16" if other == torch.float16 else "bf16"
    result = tune(pipe, latents, emb.to(dtype), TuneConfig(steps=1, precision=explicit))
    assert {p.dtype for p in result.pipeline.unet.parameters()} == {other}


@pytest.mark.parametrize("bf16_gpu", [True, False])
def test_cuda_loading_and_tuning_agree_on_one_half_type(monkeypatch, bf16_gpu: bool) -> None:
    """On CUDA the CLI loads frozen weights in the type tuning's 'auto' autocasts to, so tuning never
    copies the frozen UNet (it used to load fp16 and autocast bf16 on bf16-capable GPUs)."""
    import tav.checkpoints
    from tav import cli
    from tav.tuning import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    seen = {}
    monkeypatch.setattr(tav.checkpoints, "load_pipeline", lambda model, **kw: seen.update(kw))
    cuda = torch.device("cuda")
    cli._load("model", cuda, None)
    assert seen["dtype"] is (torch.bfloat16 if bf16_gpu else torch.float16)
    assert resolve_precision("auto", cuda, seen["dtype"]) is seen["dtype"]
    assert resolve_precision("auto", cuda) is seen["dtype"]  # fp32 weights on CUDA: the same half type


def test_resolve_precision_follows_half_weights() -> None:
    from tav.tuning import half_dtype, resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) is None and resolve_precision("auto", cpu, torch.float32) is None
    assert resolve_precision("auto", cpu, torch.bfloat16) is torch.bfloat16
    assert resolve_precision("auto", cuda, torch.float16) is torch.float16
    assert resolve_precision("fp32", cuda, torch.float16) is None
    assert resolve_precision("bf16", cpu, torch.float16) is torch.bfloat16
    assert half_dtype(cpu) is torch.float16  # bf16 only where a GPU supports it


def test_first_adam_step_moves_every_trained_weight_by_the_learning_rate(setup) -> None:
    """AdamW's first update is lr * g / (|g| + eps) per element (minus lr * decay * w): the step size the
    user asked for, which clipping rescales only through eps. Pins lr, weight decay and clipping together."""
    pipe, latents, emb = setup
    names = trainable_names(pipe.unet, TuneConfig().trainable_modules)
    base = dict(pipe.unet.named_parameters())

    def moved(**kw: float) -> torch.Tensor:
        tuned = dict(tune(pipe, latents, emb, TuneConfig(steps=1, seed=2, **kw)).pipeline.unet.named_parameters())
        return torch.cat([(tuned[n] - base[n]).detach().flatten() for n in names])

    step = moved(lr=2e-3, weight_decay=0.0)
    assert step.abs().max().item() == pytest.approx(2e-3, rel=1e-3)
    assert (step.abs() > 1.8e-3).float().mean() > 0.5  # most weights have a gradient well above eps
    weights = torch.cat([base[n].detach().flatten() for n in names])
    decayed = moved(lr=2e-3, weight_decay=10.0)  # decoupled decay: w -> w (1 - lr * wd), then the Adam step
    torch.testing.assert_close(decayed - step, -2e-3 * 10.0 * weights, rtol=1e-3, atol=1e-6)
    clipped = moved(lr=2e-3, weight_decay=0.0, max_grad_norm=1e-12)  # gradients far below Adam's eps
    assert clipped.abs().max().item() < 1e-5


def test_the_result_records_the_clip_and_is_ready_to_sample(setup, monkeypatch) -> None:
    """Saved with the tuned weights: the caption, frames, pixel size and trained modules. After tuning the
    UNet is back in eval mode, frozen, and without gradient checkpointing (on only where asked, or on CUDA)."""
    pipe, latents, emb = setup
    calls: list[str] = []
    unet_cls = type(pipe.unet.unet)
    monkeypatch.setattr(unet_cls, "enable_gradient_checkpointing", lambda self: calls.append("on"))
    monkeypatch.setattr(unet_cls, "disable_gradient_checkpointing", lambda self: calls.append("off"))
    result = tune(pipe, latents, emb, TuneConfig(steps=1, trainable_modules=["attn_temp"]), prompt="a red circle")
    assert result.pipeline.info == {
        "prompt": "a red circle", "frames": 4, "height": 64, "width": 64, "trainable_modules": ["attn_temp"],
    }  # fmt: skip
    unet = result.pipeline.unet
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())
    assert calls == []  # auto on the CPU: off
    tune(pipe, latents, emb, TuneConfig(steps=1, gradient_checkpointing=True))
    assert calls == ["on", "off"]


def test_seeds_pick_different_noise_and_timesteps(setup) -> None:
    pipe, latents, emb = setup
    a = tune(pipe, latents, emb, TuneConfig(steps=2, seed=1)).losses
    b = tune(pipe, latents, emb, TuneConfig(steps=2, seed=2)).losses
    assert a != b
    assert (
        tune(pipe, latents, emb, TuneConfig(steps=2)).losses
        == tune(pipe, latents, emb, TuneConfig(steps=2, seed=33)).losses
    )


def test_bad_settings_and_a_diverging_run_are_clear_errors(setup) -> None:
    pipe, latents, emb = setup
    with pytest.raises(ValueError, match=r"expected one clip's latents \[1, C, frames, h, w\], got \(2, 4, 4, 8, 8\)"):
        tune(pipe, latents.repeat(2, 1, 1, 1, 1), emb, TuneConfig(steps=1))
    with pytest.raises(ValueError, match=r"got \(4, 4, 8, 8\)"):
        tune(pipe, latents[0], emb, TuneConfig(steps=1))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        tune(pipe, latents, emb, TuneConfig(steps=0))
    with pytest.raises(ValueError, match="precision must be auto, fp32, fp16 or bf16, got 'fp8'"):
        tune(pipe, latents, emb, TuneConfig(steps=1, precision="fp8"))
    with pytest.raises(ValueError, match=r"match no module of this UNet; use suffixes of module names such as \["):
        tune(pipe, latents, emb, TuneConfig(steps=1, trainable_modules=["nonexistent"]))
    with pytest.raises(
        ValueError,
        match=r"tuning diverged: the loss became (inf|nan) at step 1 of 2; lower the learning rate \(now 3e-05\)",
    ):
        tune(pipe, latents * 1e30, emb, TuneConfig(steps=2))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_no_gradients_are_left_behind(setup, precision: str, monkeypatch) -> None:
    """Gradients live only during a step: none is left on the tuned model or on the (shared) frozen weights of
    the input, which would hold memory as large as the weights. Loss scaling runs only for fp16."""
    pipe, latents, emb = setup
    scalers: list[bool] = []
    real = torch.amp.GradScaler

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        scaler = real(*args, **kwargs)
        scalers.append(scaler.is_enabled())
        return scaler

    monkeypatch.setattr(torch.amp, "GradScaler", spy)
    result = tune(pipe, latents, emb, TuneConfig(steps=2, lr=1e-3, precision=precision))
    assert all(p.grad is None for p in result.pipeline.unet.parameters())
    assert all(p.grad is None for p in pipe.unet.parameters())
    assert scalers == [precision == "fp16"]


def test_fp32_tuning_runs_without_autocast(setup, monkeypatch) -> None:
    """fp32 means fp32: CPU autocast would silently run the matmuls in bf16."""
    pipe, latents, emb = setup
    seen: list[bool] = []
    forward = type(pipe.unet).forward

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(torch.is_autocast_enabled("cpu"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe.unet), "forward", spy)
    tune(pipe, latents, emb, TuneConfig(steps=1, precision="fp32"))
    tune(pipe, latents, emb, TuneConfig(steps=1, precision="bf16"))
    assert seen == [False, True]


def test_every_weight_can_be_tuned(setup) -> None:
    """The empty suffix matches every module: full fine-tuning is the user's call, and it works."""
    pipe, latents, emb = setup
    result = tune(pipe, latents, emb, TuneConfig(steps=1, trainable_modules=[""]))
    assert result.trainable_params == sum(p.numel() for p in pipe.unet.parameters())
