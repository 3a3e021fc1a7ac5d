"""DDIM inversion and DDIM sampling with classifier-free guidance, as pure functions.

The schedule follows the reference (diffusers 0.11 DDIM with ``steps_offset=1``,
``set_alpha_to_one=False``): 50 steps are timesteps 981, 961, ..., 1. Inversion walks them upwards
with the reference's ``next_step``; sampling walks them down. Both accept epsilon and v prediction.
A 2-D pipeline works too: frames are then denoised independently (the per-frame baseline).
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers import DDPMScheduler
from einops import rearrange

from .control import Control, check_hint_frames, fold, residuals
from .out_of_memory import releases_memory
from .pipeline import Pipeline
from .progress import ProgressFn, report
from .validation import NonFiniteError, check_finite_tensor, check_number, check_seed
from .windows import Windows, fused_prediction


def alphas_cumprod(scheduler_config: dict) -> torch.Tensor:
    """``alpha_bar_t`` for t = 0..T-1 from a diffusers scheduler config (any beta schedule)."""
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    cfg = {k: scheduler_config[k] for k in keys if scheduler_config.get(k) is not None}
    return DDPMScheduler(**cfg).alphas_cumprod.double()


def ddim_timesteps(num_train_timesteps: int, steps: int, offset: int = 1) -> list[int]:
    """Descending DDIM timesteps with "leading" spacing, as the reference (50 -> 981..1).

    The offset shrinks where it would push the top timestep past the last trained one: 1000 steps
    over 1000 timesteps are 999..0 (diffusers with ``steps_offset=1`` asks for t=1000 and crashes).
    """
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be between 1 and {num_train_timesteps}, got {steps}")
    ratio = num_train_timesteps // steps
    offset = min(offset, num_train_timesteps - 1 - (steps - 1) * ratio)
    return [i * ratio + offset for i in reversed(range(steps))]


def split_prediction(
    model_out: torch.Tensor, x: torch.Tensor, alpha_bar: float, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0, eps)`` implied by the model output at a noise level ``alpha_bar``."""
    a, s = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    if prediction_type == "epsilon":
        eps = model_out
        return (x - s * eps) / a, eps
    if prediction_type == "v_prediction":
        return a * x - s * model_out, a * model_out + s * x
    if prediction_type == "sample":
        x0 = model_out
        return x0, (x - a * x0) / s
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def ddim_step(
    x: torch.Tensor,
    model_out: torch.Tensor,
    alpha_t: float,
    alpha_prev: float,
    prediction_type: str,
    eta: float = 0.0,
    noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One DDIM denoising step from noise level ``alpha_t`` to ``alpha_prev`` (eq. 12, Song et al.)."""
    x0, eps = split_prediction(model_out, x, alpha_t, prediction_type)
    sigma = eta * ((1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)) ** 0.5
    out = alpha_prev**0.5 * x0 + (1 - alpha_prev - sigma**2) ** 0.5 * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("eta > 0 needs noise")
        out = out + sigma * noise
    return out


def inversion_step(
    x: torch.Tensor, model_out: torch.Tensor, alpha_cur: float, alpha_next: float, prediction_type: str
) -> torch.Tensor:
    """The reference's ``next_step``: move ``x`` deterministically from ``alpha_cur`` up to ``alpha_next``.

    The model was evaluated at the *next* timestep (as the reference does), so its output is
    interpreted at ``alpha_next`` when converting v to epsilon.
    """
    _, eps = split_prediction(model_out, x, alpha_next, prediction_type)
    x0 = (x - (1 - alpha_cur) ** 0.5 * eps) / alpha_cur**0.5
    return alpha_next**0.5 * x0 + (1 - alpha_next) ** 0.5 * eps


def predict(
    pipe: Pipeline, x: torch.Tensor, t: int, embeds: torch.Tensor, control: Optional[Control] = None
) -> torch.Tensor:
    """UNet output for video latents ``[B, C, F, h, w]``; a 2-D UNet sees frames as a batch.

    With ``control``, a ControlNet adds its per-frame residuals.
    """
    param = next(pipe.unet.parameters())
    x_in, e_in = x.to(param.dtype), embeds.to(param.device, param.dtype)
    b, f = x.shape[0], x.shape[2]
    t_in = torch.tensor(t, device=x.device)
    kwargs = residuals(control, fold(x_in), t_in, e_in.repeat_interleave(f, 0)) if control else {}
    if not _is_video_unet(pipe):
        out = pipe.unet(fold(x_in), t_in, e_in.repeat_interleave(f, 0), return_dict=False, **kwargs)[0]
        return rearrange(out, "(b f) c h w -> b c f h w", b=b).to(x.dtype)
    return pipe.unet(x_in, t_in, e_in, **kwargs).to(x.dtype)


def predict_windows(
    pipe: Pipeline,
    x: torch.Tensor,
    t: int,
    embeds: torch.Tensor,
    control: Optional[Control],
    windows: Optional[Windows],
    on_window: Optional[ProgressFn] = None,
) -> torch.Tensor:
    """:func:`predict` for the whole clip, one window at a time when ``windows`` is set (see tav.windows)."""
    if windows is None:
        out = predict(pipe, x, t, embeds, control)
        report(on_window, 1, 1)
        return out
    ctx = pipe.unet.ctx if _is_video_unet(pipe) else None
    return fused_prediction(lambda xw, cw: predict(pipe, xw, t, embeds, cw), x, windows, control, ctx, on_window)


def _window_progress(callback: Optional[ProgressFn], step: int, steps: int) -> Optional[ProgressFn]:
    """Progress over steps x windows, so long clips report (and can be cancelled) after every window."""
    if callback is None:
        return None
    return lambda k, n: callback(step * n + k, steps * n)


def _is_video_unet(pipe: Pipeline) -> bool:
    from .inflation import VideoUNet

    return isinstance(pipe.unet, VideoUNet)


def _schedule(pipe: Pipeline, steps: int) -> tuple[torch.Tensor, list[int], int, float]:
    cfg = pipe.scheduler_config
    ac = alphas_cumprod(cfg)
    n_train = int(cfg.get("num_train_timesteps", 1000))
    ts = ddim_timesteps(n_train, steps, int(cfg.get("steps_offset", 1)))
    final = 1.0 if cfg.get("set_alpha_to_one", False) else float(ac[0])
    return ac, ts, n_train // steps, final


@releases_memory("invert")
@torch.no_grad()
def invert(
    pipe: Pipeline,
    latents: torch.Tensor,
    *,
    steps: int = 50,
    prompt_embeds: Optional[torch.Tensor] = None,
    callback: Optional[ProgressFn] = None,
    return_all: bool = False,
    windows: Optional[Windows] = None,
) -> torch.Tensor | list[torch.Tensor]:
    """DDIM-invert clean latents to the noise level of the first sampling timestep.

    ``prompt_embeds`` None means the empty prompt, as the reference (unconditional, no guidance).
    Returns the final latent, or every intermediate one with ``return_all``. ``windows``: run the
    UNet window by window over a long clip (:mod:`tav.windows`); None is one pass, the reference.
    """
    _check_latents(latents)
    ac, ts, ratio, final = _schedule(pipe, steps)
    embeds = pipe.encode_prompt("") if prompt_embeds is None else prompt_embeds
    check_finite_tensor(embeds, "the prompt embedding")
    embeds = embeds.expand(latents.shape[0], -1, -1)
    x = latents.float()
    path = [x]
    for i, t in enumerate(reversed(ts)):
        cur = t - ratio
        a_cur = float(ac[cur]) if cur >= 0 else final
        out = predict_windows(pipe, x, t, embeds, None, windows, _window_progress(callback, i, steps)).float()
        x = inversion_step(x, out, a_cur, float(ac[t]), pipe.prediction_type)
        _check_step(x, "DDIM inversion", i + 1, steps)
        path.append(x)
    return path if return_all else x


@releases_memory("sample")
@torch.no_grad()
def sample(
    pipe: Pipeline,
    prompt_embeds: torch.Tensor,
    *,
    negative_embeds: Optional[torch.Tensor] = None,
    latents: Optional[torch.Tensor] = None,
    frames: Optional[int] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    steps: int = 50,
    guidance_scale: float = 12.5,
    eta: float = 0.0,
    seed: int = 0,
    callback: Optional[ProgressFn] = None,
    control: Optional[Control] = None,
    windows: Optional[Windows] = None,
) -> torch.Tensor:
    """DDIM sampling with classifier-free guidance (cond and uncond in one batch).

    Starts from ``latents`` (e.g. the inverted clip) or, if None, from seeded Gaussian noise of
    ``frames x height x width`` pixels. With eta 0 and given latents the result is deterministic.
    ``control`` adds a ControlNet with one hint per frame (to cond and uncond alike; with
    ``windows``, each window gets its own frames' hints).
    """
    check_number("guidance scale (cfg)", guidance_scale, 0, 1000, hint="the paper uses 12.5; 1 disables guidance")
    check_number("eta", eta, 0, 1, hint="0 is deterministic DDIM, 1 is DDPM-like")
    check_seed("seed", seed)
    device = pipe.device
    gen = torch.Generator("cpu").manual_seed(seed)
    if latents is None:
        if not (frames and height and width):
            raise ValueError("sample() needs either initial latents or frames, height and width")
        k = pipe.latent_factor
        if height % k or width % k:
            raise ValueError(f"height and width must be multiples of {k}, got {width}x{height}")
        c = pipe.unet.config.in_channels
        latents = torch.randn((1, c, frames, height // k, width // k), generator=gen)
    _check_latents(latents)
    if control is not None:
        check_hint_frames(control, latents.shape[2])  # windows then slice each window's own hints
    ac, ts, ratio, final = _schedule(pipe, steps)
    x = latents.to(device, torch.float32)
    cond = prompt_embeds[:1].to(device)
    check_finite_tensor(cond, "the prompt embedding")
    if negative_embeds is not None:
        check_finite_tensor(negative_embeds, "the negative prompt embedding")
    guided = guidance_scale != 1.0
    if guided:
        uncond = (pipe.encode_prompt("") if negative_embeds is None else negative_embeds[:1]).to(device)
        embeds = torch.cat([uncond, cond])
    for i, t in enumerate(ts):
        ctl = control if control is not None and control.active(t, ac) else None
        on_window = _window_progress(callback, i, steps)
        if guided:
            out_u, out_c = predict_windows(pipe, torch.cat([x, x]), t, embeds, ctl, windows, on_window).float().chunk(2)
            out = out_u + guidance_scale * (out_c - out_u)
        else:
            out = predict_windows(pipe, x, t, cond, ctl, windows, on_window).float()
        prev = t - ratio
        a_prev = float(ac[prev]) if prev >= 0 else final
        noise = torch.randn(x.shape, generator=gen).to(device) if eta > 0 else None
        x = ddim_step(x, out, float(ac[t]), a_prev, pipe.prediction_type, eta, noise)
        _check_step(x, "sampling", i + 1, steps)
    return x


def _check_latents(latents: torch.Tensor) -> None:
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise ValueError(f"expected one video's latents shaped [1, C, frames, h, w], got {tuple(latents.shape)}")
    check_finite_tensor(latents, "the starting latents", hint="they are corrupted; re-run the inversion")


def _check_step(x: torch.Tensor, what: str, step: int, steps: int) -> None:
    """Stop at the first step that produced NaN/inf instead of finishing with a black video."""
    if not torch.isfinite(x).all():
        raise NonFiniteError(
            f"{what} produced NaN/infinite values at step {step} of {steps}: the model or its settings diverge "
            "(a huge cfg, fp16 overflow, damaged weights); lower cfg, use fp32 precision or reload the model"
        )
