"""DDIM schedule/step against diffusers, and inversion -> sampling reconstruction."""

import pytest
import torch
from diffusers import DDIMScheduler

from tav import ddim
from tav.inflation import inflate
from tav.pipeline import Pipeline

from .tiny import SCHEDULER, tiny_pipeline


def test_timesteps_match_reference_schedule() -> None:
    sched = DDIMScheduler(**{k: v for k, v in SCHEDULER.items() if not k.startswith("_")})
    sched.set_timesteps(50)
    assert ddim.ddim_timesteps(1000, 50, 1) == sched.timesteps.tolist()
    assert ddim.ddim_timesteps(1000, 50, 1)[:2] == [981, 961] and ddim.ddim_timesteps(1000, 50, 1)[-1] == 1


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_step_matches_diffusers(prediction_type: str, eta: float) -> None:
    cfg = {k: v for k, v in SCHEDULER.items() if not k.startswith("_")}
    sched = DDIMScheduler(**{**cfg, "prediction_type": prediction_type})
    sched.set_timesteps(20)
    ac = ddim.alphas_cumprod(cfg)
    torch.manual_seed(0)
    x = torch.randn(1, 4, 2, 8, 8, dtype=torch.float64)
    for t in sched.timesteps.tolist():
        out, noise = torch.randn_like(x), torch.randn_like(x)
        want = sched.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
        prev = t - 1000 // 20
        a_prev = float(ac[prev]) if prev >= 0 else float(ac[0])
        got = ddim.ddim_step(x, out, float(ac[t]), a_prev, prediction_type, eta, noise)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


class GaussianEps(torch.nn.Module):
    """The exact denoiser for data ~ N(mu, sd^2): DDIM is then the probability-flow ODE, so
    inversion followed by sampling must return the input up to DDIM's discretisation error."""

    def __init__(self, mu: float, sd: float, prediction_type: str, schedule: dict = SCHEDULER) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.mu, self.sd, self.pred = mu, sd, prediction_type
        self.ac = ddim.alphas_cumprod(schedule).float()

    def forward(self, x, t, emb, return_dict=False):
        a = self.ac[int(t)]
        eps = (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.sd**2 + 1 - a)
        if self.pred == "epsilon":
            return (eps,)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        if self.pred == "sample":
            return (x0,)
        return (a.sqrt() * eps - (1 - a).sqrt() * x0,)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_inversion_then_sampling_reconstructs(prediction_type: str) -> None:
    """Tolerance: RMS error <= 0.03 at 50 steps on data of std 0.5 (measured 0.021), and the error
    halves when the steps double: DDIM inversion evaluates eps at the next timestep, a first-order
    approximation, so the error is O(1/steps) — a wrong sign or offset in either direction breaks both."""
    pipe = Pipeline(
        GaussianEps(0.3, 0.5, prediction_type), None, None, None, {**SCHEDULER, "prediction_type": prediction_type}
    )
    torch.manual_seed(0)
    x = 0.3 + 0.5 * torch.randn(1, 4, 3, 8, 8)
    emb = torch.zeros(1, 77, 8)
    errors = []
    for steps in (50, 100):
        noise = ddim.invert(pipe, x, steps=steps, prompt_embeds=emb)
        assert 0.9 < noise.std().item() < 1.1  # inverted latents look like unit noise
        back = ddim.sample(pipe, emb, latents=noise, steps=steps, guidance_scale=1.0)
        errors.append(((back - x) ** 2).mean().sqrt().item())
    assert errors[0] <= 0.03
    assert errors[1] <= 0.6 * errors[0]


def test_video_pipeline_invert_sample_shapes_and_determinism() -> None:
    """Shapes, progress and seeding on the real inflated UNet; what guidance does is checked below."""
    pipe = inflate(tiny_pipeline(seed=2))
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8)
    emb = pipe.encode_prompt("a red square")
    seen = []
    inv = ddim.invert(pipe, x, steps=4, callback=lambda s, t: seen.append((s, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    a = ddim.sample(pipe, emb, latents=inv, steps=4, guidance_scale=7.5, seed=1)
    b = ddim.sample(pipe, emb, latents=inv, steps=4, guidance_scale=7.5, seed=99)
    assert a.shape == x.shape and torch.equal(a, b)  # eta 0 from an inverted latent: the seed is irrelevant
    c = ddim.sample(pipe, emb, frames=3, height=64, width=64, steps=2, seed=5)
    d = ddim.sample(pipe, emb, frames=3, height=64, width=64, steps=2, seed=5)
    assert c.shape == (1, 4, 3, 8, 8) and torch.equal(c, d)


class PromptMeanEps(GaussianEps):
    """The exact denoiser for data ~ N(mu, sd^2) where mu is read from the prompt embedding: the
    prediction is linear in mu, so guidance ``u + s (c - u)`` is exactly the model of mean
    ``mu_u + s (mu_c - mu_u)``, and sampling must land there."""

    def forward(self, x, t, emb, return_dict=False):
        self.mu = emb[:, 0, 0].view(-1, 1, 1, 1)
        return super().forward(x, t, emb, return_dict)


def _prompt_mean_pipe() -> Pipeline:
    return Pipeline(PromptMeanEps(0.0, 0.5, "epsilon"), None, None, None, dict(SCHEDULER))


@pytest.mark.parametrize(("scale", "want"), [(1.0, 0.4), (2.0, 0.8), (0.0, 0.0)])
def test_guidance_moves_samples_towards_the_prompt(scale: float, want: float) -> None:
    """cfg s: the prompt's mean 0.4, the negative prompt's 0: samples end at mean 0.4 s (not -0.4 s)."""
    pipe = _prompt_mean_pipe()
    cond, neg = torch.full((1, 77, 8), 0.4), torch.zeros(1, 77, 8)
    noise = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = ddim.sample(pipe, cond, negative_embeds=neg, latents=noise, steps=20, guidance_scale=scale)
    assert x.mean().item() == pytest.approx(want, abs=0.05)
    assert x.std().item() == pytest.approx(0.5, abs=0.05)


def test_eta_makes_sampling_stochastic_and_still_lands_on_the_data() -> None:
    """eta > 0 adds fresh seeded noise each step (the seed then matters); eta 0 is deterministic."""
    pipe = _prompt_mean_pipe()
    cond = torch.full((1, 77, 8), 0.4)
    noise = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def run(eta: float, seed: int) -> torch.Tensor:
        return ddim.sample(pipe, cond, latents=noise, steps=20, guidance_scale=1.0, eta=eta, seed=seed)

    assert torch.equal(run(0.0, 1), run(0.0, 2))
    a, b = run(1.0, 1), run(1.0, 2)
    assert torch.equal(a, run(1.0, 1))  # seeded
    assert (a - b).abs().mean() > 0.1 and (a - run(0.0, 1)).abs().mean() > 0.1
    for x in (a, b):  # still the data's mean (std 0.42 measured: 20 stochastic steps lose some spread)
        assert x.mean().item() == pytest.approx(0.4, abs=0.05)


def test_2d_pipeline_denoises_frames_independently() -> None:
    """The per-frame baseline: a 2-D pipeline treats each frame alone, so frame order is irrelevant."""
    pipe = tiny_pipeline(seed=4)
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8)
    emb = pipe.encode_prompt("a cat")
    out = ddim.sample(pipe, emb, latents=x, steps=2, guidance_scale=3.0)
    rev = ddim.sample(pipe, emb, latents=x.flip(2), steps=2, guidance_scale=3.0)
    torch.testing.assert_close(out.flip(2), rev)


@pytest.mark.parametrize(
    ("steps", "first", "last"), [(1, 1, 1), (2, 501, 1), (500, 999, 1), (999, 999, 1), (1000, 999, 0)]
)
def test_timesteps_at_the_bounds_exist(steps: int, first: int, last: int) -> None:
    """Every schedule from 1 to 1000 steps names only trained timesteps (1000 used to ask for t=1000)."""
    ts = ddim.ddim_timesteps(1000, steps, 1)
    assert len(ts) == len(set(ts)) == steps
    assert (ts[0], ts[-1]) == (first, last)
    assert ts == sorted(ts, reverse=True)


def test_thousand_steps_reconstruct_the_gaussian() -> None:
    """The steps maximum runs (it used to ask for t=1000), and as the last step (t=0 -> alpha_bar_0) changes
    nothing, invert -> sample round-trips closely (RMS 0.0010 measured; 50 steps give 0.021)."""
    pipe = Pipeline(GaussianEps(0.3, 0.5, "epsilon"), None, None, None, dict(SCHEDULER))
    torch.manual_seed(0)
    x = 0.3 + 0.5 * torch.randn(1, 4, 1, 4, 4)
    emb = torch.zeros(1, 77, 8)
    noise = ddim.invert(pipe, x, steps=1000, prompt_embeds=emb)
    back = ddim.sample(pipe, emb, latents=noise, steps=1000, guidance_scale=1.0)
    assert ((back - x) ** 2).mean().sqrt().item() < 0.005


def test_bad_arguments() -> None:
    pipe = tiny_pipeline()
    emb = torch.zeros(1, 77, 32)
    with pytest.raises(ValueError, match="steps"):
        ddim.ddim_timesteps(1000, 0)
    with pytest.raises(ValueError, match="steps"):
        ddim.ddim_timesteps(1000, 1001)
    with pytest.raises(ValueError, match="multiples of 8"):
        ddim.sample(pipe, emb, frames=2, height=60, width=64)
    with pytest.raises(ValueError, match="either initial latents"):
        ddim.sample(pipe, emb)
    with pytest.raises(ValueError, match=r"\[1, C, frames"):
        ddim.invert(pipe, torch.zeros(4, 8, 8))


BETAS = torch.linspace(1e-4, 0.03, 200).tolist()
SCHEDULES = {
    "sd": {k: v for k, v in SCHEDULER.items() if not k.startswith("_")},
    "500 steps, offset 0, alpha to one": {
        "num_train_timesteps": 500, "beta_start": 0.001, "beta_end": 0.02, "beta_schedule": "linear",
        "steps_offset": 0, "set_alpha_to_one": True,
    },
    "trained betas": {"num_train_timesteps": 200, "trained_betas": BETAS, "steps_offset": 1, "set_alpha_to_one": False},
}  # fmt: skip


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_sampling_matches_a_diffusers_ddim_loop(name: str, prediction_type: str) -> None:
    """Whole sampling runs, not single steps: the schedule read from the model's scheduler config
    (train length, offset, trained betas, the final alpha) must be the one diffusers builds from it."""
    config = {**SCHEDULES[name], "prediction_type": prediction_type, "clip_sample": False}
    model = GaussianEps(0.3, 0.5, prediction_type, config)
    pipe = Pipeline(model, None, None, None, config)
    sched = DDIMScheduler(**config)
    sched.set_timesteps(7)
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    emb = torch.zeros(1, 77, 8)
    want = x.clone()
    for t in sched.timesteps:
        want = sched.step(model(want, t, emb)[0], t, want).prev_sample
    got = ddim.sample(pipe, emb, latents=x, steps=7, guidance_scale=1.0)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_scheduler_config_without_the_optional_keys_gets_the_references_schedule() -> None:
    """A config with only the betas is SD's: 1000 train steps, steps_offset 1, final alpha alpha_bar_0
    (the reference's schedule), whatever diffusers' own defaults are."""
    bare = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    full = {**bare, "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": False}
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    emb = torch.zeros(1, 77, 8)
    runs = []
    for config in (bare, full):
        pipe = Pipeline(GaussianEps(0.3, 0.5, "epsilon"), None, None, None, config)
        runs.append(ddim.sample(pipe, emb, latents=x, steps=7, guidance_scale=1.0))
        runs.append(ddim.invert(pipe, x, steps=7, prompt_embeds=emb))
    for a, b in zip(runs[:2], runs[2:], strict=True):
        assert torch.equal(a, b)
    assert ddim.ddim_timesteps(1000, 50) == ddim.ddim_timesteps(1000, 50, 1)  # the default offset is 1


def test_ddim_step_is_deterministic_unless_eta_is_given() -> None:
    x, out = torch.randn(2, 4, 4), torch.randn(2, 4, 4)
    plain = ddim.ddim_step(x, out, 0.5, 0.8, "epsilon")
    assert torch.equal(plain, ddim.ddim_step(x, out, 0.5, 0.8, "epsilon", 0.0))
    with pytest.raises(ValueError, match="^eta > 0 needs noise$"):
        ddim.ddim_step(x, out, 0.5, 0.8, "epsilon", 0.5)
    with pytest.raises(ValueError, match="unsupported prediction_type 'flow'"):
        ddim.split_prediction(out, x, 0.5, "flow")


@pytest.mark.parametrize("video", [False, True], ids=["2d", "inflated"])
def test_a_half_precision_unet_takes_float32_latents_and_gives_float32(video: bool) -> None:
    """The loaders keep UNets in bf16/fp16 while the DDIM loop runs in float32: predict casts in and out."""
    pipe = tiny_pipeline(seed=3)
    pipe = inflate(pipe) if video else pipe
    x = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = pipe.encode_prompt("a red square")
    want = ddim.predict(pipe, x, 500, emb)
    pipe.unet.to(torch.bfloat16)
    got = ddim.predict(pipe, x, 500, emb)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)


def test_latents_of_another_shape_or_with_nan_are_refused() -> None:
    pipe = tiny_pipeline()
    emb = torch.zeros(1, 77, 32)
    for shape in ((2, 4, 2, 8, 8), (1, 4, 8, 8)):  # two videos; one frame without its frame axis
        with pytest.raises(ValueError, match=r"one video's latents shaped \[1, C, frames, h, w\]"):
            ddim.sample(pipe, emb, latents=torch.zeros(shape))
    bad = torch.zeros(1, 4, 2, 8, 8)
    bad[0, 0, 1, 2, 3] = float("nan")
    with pytest.raises(
        ValueError, match="^the starting latents holds NaN values; they are corrupted; re-run the inversion$"
    ):
        ddim.invert(pipe, bad, steps=2)


class Overflow(torch.nn.Module):
    """A UNet whose output overflows at the second step (fp16 overflow, a huge cfg)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, x, t, emb, return_dict=False):
        self.calls += 1
        return (torch.full_like(x, float("inf") if self.calls > 1 else 0.1),)


def test_the_first_non_finite_step_stops_the_run_with_advice() -> None:
    pipe = Pipeline(Overflow(), None, None, None, dict(SCHEDULER))
    x, emb = torch.randn(1, 4, 2, 4, 4), torch.zeros(1, 77, 8)
    with pytest.raises(
        ValueError,
        match=r"(?s)^sampling produced NaN/infinite values at step 2 of 3: .*use fp32 precision or reload the model$",
    ):
        ddim.sample(pipe, emb, latents=x, steps=3, guidance_scale=1.0)
