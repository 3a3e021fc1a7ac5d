"""Memory planner: the peak memory of a tune / invert / sample job, known before it starts.

Why: a Stable Diffusion video job that does not fit fails after minutes of work, or takes the
host's other models down with it. The planner runs this project's own code paths
(:func:`tav.tuning.tune`, :func:`tav.ddim.invert`, :func:`tav.ddim.sample`, the VAE's
encode/decode) on fake tensors (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes and dtypes
propagate, nothing is allocated or computed) under :class:`LiveBytes`, a dispatch mode that keeps the
bytes of every live tensor storage and their high-water mark (:mod:`tav.memory_probe`). The model is
built from its configs only, so no weight is ever read. A 512x512 SD1.5 plan takes seconds to a minute
on a CPU (fake tensors still dispatch every op in Python).

CUDA is emulated on the CPU device (autograd on fake CUDA tensors needs a real GPU): allocations are
rounded to the caching allocator's 512-byte blocks, the fused SDPA kernels' memory is the CPU flash
kernel's (output + log-sum-exp), and ``CudaAutocastPolicy`` adds the ops CUDA autocast runs in
fp32 (GroupNorm, LayerNorm, exp, pow, ...) to CPU autocast's policy.

What it cannot see is a stated allowance (:data:`CONTEXT_BYTES`, :data:`FRAGMENTATION`): the CUDA
context and library handles (outside torch's allocator), the caching allocator's fragmentation,
and cuDNN/cuBLAS workspaces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .job_size import check_job_size, memory_budget, module_bytes
from .memory_probe import LiveBytes, emulation
from .validation import InputError, check_input_file

KINDS = ("tune", "invert", "sample")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ATTENTION = ("flash", "math")
#: CUDA context, kernels and cuBLAS/cuDNN handles: outside torch's allocator, so neither the planner
#: nor ``max_memory_allocated`` sees them; 300-500 MiB on recent GPUs with lazy module loading
CONTEXT_BYTES = 512 * 2**20
#: caching-allocator fragmentation (reserved over allocated) and cuDNN/cuBLAS workspaces, as a share
#: of the planned peak; an assumption until the GPU check (benchmarks/gpu_check.py) measures it
FRAGMENTATION = 0.10
#: the CUDA caching allocator rounds every block up to a multiple of 512 bytes
CUDA_BLOCK = 512
ASSETS = Path(__file__).resolve().parent / "assets"
#: the search for what fits stops here (the widgets' limit)
MAX_FRAMES = 1024

#: Stable Diffusion 1.5's UNet and VAE configs (the defaults when no model is given)
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


@dataclasses.dataclass(frozen=True)
class ModelConfigs:
    """What the planner needs of a model: its component configs, never its weights."""

    unet: dict
    vae: dict
    text_encoder: dict
    scheduler: dict
    name: str = "SD1.5"

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae.get("block_out_channels", [0])) - 1)


def sd15_configs() -> ModelConfigs:
    text = json.loads((ASSETS / "clip_l_text_config.json").read_text())
    sched = json.loads((ASSETS / "scheduler_sd.json").read_text())
    return ModelConfigs(dict(SD15_UNET), dict(SD15_VAE), text, sched)


def read_configs(path: Optional[str]) -> ModelConfigs:
    """A diffusers folder's ``unet/vae/text_encoder/scheduler`` configs (missing parts: SD1.5's); None: SD1.5.

    A single-file checkpoint is planned as SD1.5 (or SD2's text encoder when its keys say so) from the
    file's header alone.
    """
    base = sd15_configs()
    if path is None:
        return base
    p = Path(path)
    if p.exists() and not p.is_dir():
        return _single_file_configs(p, base)
    if not p.is_dir():
        raise ValueError(f"--model {path}: no such folder or file; give a diffusers folder or a .safetensors file")
    if not (p / "unet" / "config.json").is_file():
        raise ValueError(f"{p} has no unet/config.json: give a diffusers Stable Diffusion folder")

    def part(name: str, default: dict, file: str = "config.json") -> dict:
        f = p / name / file
        if not f.is_file():
            return default
        try:
            found = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{f} is not readable JSON ({e}); re-download the model") from None
        return {k: v for k, v in found.items() if not k.startswith("_")}

    return ModelConfigs(
        part("unet", {}),
        part("vae", base.vae),
        part("text_encoder", base.text_encoder),
        {**base.scheduler, **part("scheduler", {}, "scheduler_config.json")},
        name=p.name,
    )


def _single_file_configs(p: Path, base: ModelConfigs) -> ModelConfigs:
    """SD1.5's configs, or SD2's text encoder and cross-attention when the header's keys say so.

    Only the header is read, so it is checked here: damaged files and the pack's own small files
    (tuned weights, latents), which are not base models and would otherwise plan as SD1.5, are refused.
    """
    from safetensors import SafetensorError, safe_open

    check_input_file(p, "--model")
    if p.suffix != ".safetensors":
        raise ValueError(f"{p}: the planner reads diffusers folders and .safetensors files (header only)")
    try:
        with safe_open(str(p), framework="pt") as f:
            keys, meta = list(f.keys()), f.metadata() or {}
    except (SafetensorError, OSError) as e:
        reason = " ".join(str(e).split())[:120]
        raise ValueError(
            f"--model {p} is not a readable .safetensors file ({reason}): it may be truncated or damaged; "
            "download it again"
        ) from None
    kind = meta.get("format", "")
    if kind.startswith(("tav-tuned/", "tav-latents/")):
        what = "tuned weights" if kind.startswith("tav-tuned/") else "inverted latents"
        raise ValueError(
            f"--model {p} holds Tune-A-Video {what} (format {kind}), not a base model: plan the Stable "
            "Diffusion checkpoint they were made with (tuned weights replace tensors the plan already counts)"
        )
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise ValueError(
            f"--model {p} is not a single-file Stable Diffusion checkpoint (no model.diffusion_model.* tensors "
            f"among its {len(keys)}); give an SD 1.x/2.x checkpoint or a diffusers folder"
        )
    if any(k.startswith("cond_stage_model.model.") for k in keys):  # OpenCLIP-H: SD 2.x
        text = json.loads((ASSETS / "open_clip_h_text_config.json").read_text())
        unet = {**base.unet, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20]}
        unet["use_linear_projection"] = True
        return dataclasses.replace(base, unet=unet, text_encoder=text, name=p.name)
    return dataclasses.replace(base, name=p.name)


def configs_of(pipe: Any) -> ModelConfigs:
    """The configs of a loaded :class:`tav.pipeline.Pipeline` (2-D or inflated)."""
    unet = {k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")}
    vae = {k: v for k, v in dict(pipe.vae.config).items() if not k.startswith("_")}
    return ModelConfigs(unet, vae, pipe.text_encoder.config.to_dict(), dict(pipe.scheduler_config), pipe.source)


@dataclasses.dataclass(frozen=True)
class Job:
    """One job to plan. ``precision`` is the frozen weights' type (and tuning's autocast type)."""

    kind: str
    frames: int
    height: int
    width: int
    precision: str = "bf16"
    checkpointing: bool = True
    attention: str = "flash"
    device: str = "cuda"
    #: frames the VAE encodes/decodes at once (Pipeline.vae_batch)
    vae_batch: int = 1

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.device not in ("cuda", "cpu"):
            raise ValueError(f"device must be cuda or cpu, got {self.device!r}")
        if self.frames < 1 or self.height < 8 or self.width < 8:
            raise ValueError(f"need at least 1 frame of 8x8 pixels, got {self.frames} of {self.width}x{self.height}")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Peak bytes of a job's largest phase, split up; ``activations`` is the peak minus the rest, so it
    includes the autograd-saved tensors, temporaries and inputs live at the peak."""

    job: Job
    phase: str
    weights: int
    optimizer: int
    gradients: int
    activations: int
    #: every phase's live bytes at its start and its peak, e.g. {"tune": {"start": ..., "peak": ...}}
    phases: dict

    @property
    def peak(self) -> int:
        return self.weights + self.optimizer + self.gradients + self.activations

    @property
    def allowance(self) -> int:
        """What the planner cannot see (CUDA only): context + fragmentation/workspaces."""
        if self.job.device != "cuda":
            return 0
        return CONTEXT_BYTES + int(self.peak * FRAGMENTATION)

    @property
    def total(self) -> int:
        return self.peak + self.allowance

    def table(self) -> str:
        j = self.job
        rows = [
            f"{j.kind} {j.frames} frames at {j.width}x{j.height}, {j.precision}, "
            f"checkpointing {'on' if j.checkpointing else 'off'}, {j.attention} attention, {j.device}",
            f"  weights      {gib(self.weights):>9}",
            f"  optimizer    {gib(self.optimizer):>9}",
            f"  gradients    {gib(self.gradients):>9}",
            f"  activations  {gib(self.activations):>9}   (peak phase: {self.phase})",
            f"  peak         {gib(self.peak):>9}   (= torch.cuda.max_memory_allocated)",
        ]
        if j.device == "cuda":
            rows.append(
                f"  allowance    {gib(self.allowance):>9}   (CUDA context {gib(CONTEXT_BYTES)} + "
                f"{FRAGMENTATION:.0%} fragmentation/workspaces)"
            )
            rows.append(f"  total        {gib(self.total):>9}")
        return "\n".join(rows)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def build_pipeline(configs: ModelConfigs, dtype: torch.dtype, *, init: bool = True) -> Any:
    """An inflated pipeline built from ``configs`` in ``dtype`` (fake under FakeTensorMode). ``init=False``
    skips weight initialisation (the planner needs shapes, not values)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.modeling_utils import no_init_weights
    from transformers import CLIPTextConfig, CLIPTextModel

    from .inflation import inflate
    from .pipeline import Pipeline

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in place: Module.to() cannot move fake parameters
    try:
        with no_init_weights() if not init else contextlib.nullcontext():
            unet = UNet2DConditionModel(**_known(UNet2DConditionModel, configs.unet)).eval()
            vae = AutoencoderKL(**_known(AutoencoderKL, configs.vae)).eval()
            text = CLIPTextModel(CLIPTextConfig(**configs.text_encoder)).eval()
        return inflate(Pipeline(unet, vae, text, None, dict(configs.scheduler), source=configs.name))
    finally:
        torch.set_default_dtype(previous)


def _known(cls: type, config: dict) -> dict:
    """The config entries ``cls`` takes (configs written by other library versions carry more)."""
    accepted = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in accepted}


def trainable_numel(unet: torch.nn.Module) -> int:
    from .tuning import DEFAULT_TRAINABLE, trainable_names

    names = set(trainable_names(unet, DEFAULT_TRAINABLE))
    return sum(p.numel() for n, p in unet.named_parameters() if n in names)


def run_phases(
    pipe: Any, job: Job, live: LiveBytes, *, steps: int = 2, probe: Optional[Callable[[str, bool], None]] = None
) -> dict[str, dict[str, int]]:
    """Run ``job``'s phases on ``pipe`` (fake or real); each phase's live bytes at its start and its peak.

    Tuning runs ``steps`` steps (the second one holds AdamW's state). ``probe(phase, started)`` is
    called around every phase (the benchmarks read process memory there).
    """
    from . import ddim
    from .tuning import TuneConfig, tune

    k = pipe.latent_factor
    f, h, w = job.frames, job.height // k, job.width // k
    c = pipe.unet.config.in_channels
    embeds = torch.zeros(1, 77, pipe.text_encoder.config.hidden_size)
    latents = torch.zeros(1, c, f, h, w)
    pipe = pipe.replace(vae_batch=job.vae_batch)
    peaks: dict[str, dict[str, int]] = {}

    def phase(name: str, fn: Callable[[], Any]) -> None:
        if probe:
            probe(name, True)
        live.reset_peak()
        start = live.live
        with emulation(
            cuda_autocast=job.device == "cuda" and job.precision != "fp32", math_attention=job.attention == "math"
        ):
            fn()
        peaks[name] = {"start": start, "peak": live.peak}
        if probe:
            probe(name, False)

    if job.kind in ("tune", "invert"):
        pixels = torch.zeros(job.vae_batch, job.height, job.width, 3)
        phase("encode", lambda: pipe.encode_video(pixels))
    if job.kind == "tune":
        cfg = TuneConfig(steps=steps, precision=job.precision, gradient_checkpointing=job.checkpointing)
        phase("tune", lambda: tune(pipe, latents, embeds, cfg))
    elif job.kind == "invert":
        phase("invert", lambda: ddim.invert(pipe, latents, steps=1, prompt_embeds=embeds))
    else:
        phase("sample", lambda: ddim.sample(pipe, embeds, negative_embeds=embeds, latents=latents, steps=1))
        one = torch.zeros(1, c, job.vae_batch, h, w)
        phase("decode", lambda: pipe.decode_latents(one))
    return peaks


class Planner:
    """Plans jobs for one model. Its fake pipeline is built once per precision, and the fake
    dispatch cache warms up, so the plans after the first take a fraction of its time."""

    def __init__(self, configs: ModelConfigs) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode

        self.configs = configs
        self._mode = FakeTensorMode()
        self._pipes: dict[torch.dtype, Any] = {}
        self._plans: dict[Job, Plan] = {}

    def plan(self, job: Job) -> Plan:
        """Plan ``job`` (fake tensors: nothing is allocated).

        fp16 tuning is planned as bf16: the same sizes and the same CUDA autocast op lists, without
        GradScaler, whose inf check (a value) fake tensors cannot answer (it holds a few scalars).
        """
        job.check()
        if job.kind == "tune" and job.precision == "fp16":
            return dataclasses.replace(self.plan(dataclasses.replace(job, precision="bf16")), job=job)
        if job not in self._plans:
            self._plans[job] = self._plan(job)
        return self._plans[job]

    def _plan(self, job: Job) -> Plan:
        dtype = PRECISIONS[job.precision]
        block = CUDA_BLOCK if job.device == "cuda" else 1
        with self._mode:
            if dtype not in self._pipes:
                self._pipes[dtype] = build_pipeline(self.configs, dtype, init=False)
            pipe = self._pipes[dtype]
            with LiveBytes(block=block, fake=True) as live:
                for m in (pipe.unet, pipe.vae, pipe.text_encoder):
                    for t in list(m.parameters()) + list(m.buffers()):
                        live.adopt(t)
                weights = live.live
                n_train = trainable_numel(pipe.unet) if job.kind == "tune" else 0
                peaks = run_phases(pipe, job, live)
        return split(job, peaks, weights, n_train)

    def largest_fitting(self, job: Job, budget: int) -> dict[str, Any]:
        """The most frames at ``job``'s size, and the largest size (aspect kept, sides multiples of 64)
        at ``job``'s frames, whose :attr:`Plan.total` fits ``budget`` bytes; None where nothing does.

        Each answer costs at most :data:`SEARCH_PLANS` plans (one plan takes seconds to a minute, about
        the same at any size), so the time is bounded for any job."""
        return {"frames": self._max_frames(job, budget), "size": self._max_size(job, budget)}

    def _max_frames(self, job: Job, budget: int) -> Optional[int]:
        frames = list(range(1, MAX_FRAMES + 1))

        def total(f: int) -> int:
            return self.plan(dataclasses.replace(job, frames=f)).total

        i = largest_within(frames, total, budget, start=min(job.frames, MAX_FRAMES) - 1)
        return None if i is None else frames[i]

    def _max_size(self, job: Job, budget: int) -> Optional[tuple[int, int]]:
        longer = max(job.width, job.height)
        sizes = sorted(
            {tuple(max(64, round(side * m / longer) * 64) for side in (job.width, job.height))
             for m in range(1, max(1, longer // 64) + 1)},
            key=lambda wh: wh[0] * wh[1],
        )  # fmt: skip

        def total(wh: tuple[int, int]) -> int:
            return self.plan(dataclasses.replace(job, width=wh[0], height=wh[1])).total

        # no start: a job with sides in 64 px steps is the last candidate, which the search asks second anyway
        i = largest_within(sizes, total, budget, x=lambda wh: wh[0] * wh[1])
        return None if i is None else sizes[i]


#: the most plans one "what fits" answer may take; past it the largest size or count known to fit is given
SEARCH_PLANS = 6


def largest_within(
    items: list[Any],
    cost: Callable[[Any], int],
    budget: int,
    *,
    x: Callable[[Any], float] = float,
    start: Optional[int] = None,
) -> Optional[int]:
    """The index of the last of ``items`` whose ``cost`` (increasing along the list) is within ``budget``;
    None if the first is not. At most :data:`SEARCH_PLANS` calls of ``cost``; ``start``: an index whose
    cost is known to be cheap to ask (the job's own plan), tried second.

    Why not bisection: memory is close to linear in frames and in pixels (``x``), so a guess
    interpolated from the nearest known points lands on or next to the edge, and the next call
    confirms it (typically 3-4 calls where bisection over 1024 frames takes 10). When two guesses in a
    row fall on the same side of the edge (a bent cost), the next one bisects. If the calls run out before the edge is
    pinned, the last index known to fit is returned: surely within budget, maybe not the largest.
    """
    known: dict[int, int] = {}

    def fits(i: int) -> bool:
        known[i] = cost(items[i])
        return known[i] <= budget

    if not fits(0):
        return None
    lo, hi = 0, len(items)  # items[lo] fits; items[hi] does not (len(items): none known not to)
    sides: list[bool] = []  # whether each interpolated guess fitted
    for _ in range(SEARCH_PLANS - 1):  # a count, not a condition on what is known: it ends, whatever it guesses
        if hi - lo <= 1:
            break
        if len(known) == 1:
            guess = start if start is not None and lo < start < hi else hi - 1
        elif sides[-2:] in ([True, True], [False, False]) and hi < len(items):
            guess = (lo + hi) // 2
        else:  # a line (two known points) or parabola (three) through the points closest to the budget
            near = sorted(known, key=lambda i: abs(known[i] - budget))[:3]
            xs = [x(items[i]) / x(items[-1]) for i in near]
            model = np.poly1d(np.polyfit(xs, [known[i] for i in near], len(near) - 1))
            below = [i for i in range(lo + 1, hi) if model(x(items[i]) / x(items[-1])) <= budget]
            guess = max(below, default=lo + 1)
        ok = fits(guess)
        lo, hi = (guess, hi) if ok else (lo, guess)
        sides = [*sides, ok] if len(known) > 2 else []
    return lo


def split(job: Job, phases: dict[str, dict[str, int]], weights: int, n_train: int) -> Plan:
    """The largest phase's peak split into weights (+ fp32 trainable masters when autocasting),
    AdamW's two fp32 moments, fp32 gradients and the rest."""
    phase = max(phases, key=lambda p: phases[p]["peak"])
    peak = phases[phase]["peak"]
    masters = 4 * n_train if job.precision != "fp32" else 0
    optimizer = 8 * n_train if phase == "tune" else 0
    gradients = 4 * n_train if phase == "tune" else 0
    weights += masters if phase == "tune" else 0
    return Plan(job, phase, weights, optimizer, gradients, peak - weights - optimizer - gradients, phases)


_PLANNERS: dict[str, Planner] = {}


def planner_for(configs: ModelConfigs) -> Planner:
    """One :class:`Planner` per model architecture for the process (its fake pipeline is reused).
    The name and the noise schedule do not change memory, so they are not part of the key."""
    key = json.dumps([configs.unet, configs.vae, configs.text_encoder], sort_keys=True, default=str)
    if key not in _PLANNERS:
        _PLANNERS[key] = Planner(configs)
    return _PLANNERS[key]


def job_for(
    pipe: Any,
    kind: str,
    frames: int,
    height: int,
    width: int,
    *,
    precision: str = "auto",
    checkpointing: Optional[bool] = None,
    device: Optional[torch.device] = None,
) -> Job:
    """The :class:`Job` a loaded pipeline will run on ``device`` (default: where its weights are), with its
    weight type and tuning's autocast type."""
    from .tuning import resolve_precision

    device = torch.device(device) if device is not None else pipe.device
    names = {v: k for k, v in PRECISIONS.items()}
    weights = pipe.dtype
    if kind == "tune":
        amp = resolve_precision(precision, device, weights)
        name = names.get(amp, "fp32") if amp is not None else "fp32"
    else:
        name = names.get(weights, "fp32")
    ckpt = device.type == "cuda" if checkpointing is None else bool(checkpointing)
    return Job(
        kind,
        frames,
        height,
        width,
        name,
        ckpt,
        "flash",
        "cuda" if device.type == "cuda" else "cpu",
        max(1, int(pipe.vae_batch)),
    )


def cuda_available(device: torch.device, resident: int) -> int:
    """Bytes a job may still take on ``device``: ``TAV_MEMORY_BUDGET_GB`` minus the weights already
    there, else the driver's free memory plus what torch's cache holds unused."""
    if os.environ.get("TAV_MEMORY_BUDGET_GB", "").strip():
        return (memory_budget(device) or 0) - resident
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def refusal(planner: Planner, job: Job, resident: int, available: int) -> Optional[str]:
    """None if ``job`` fits ``available`` bytes beyond the ``resident`` weights already on the device
    (the CUDA context exists then, so only fragmentation is allowed for), else the refusal message."""
    plan = planner.plan(job)
    need = plan.peak - resident + int(plan.peak * FRAGMENTATION)
    if need <= available:
        return None
    budget = available + resident + CONTEXT_BYTES  # what Plan.total may reach
    fits = planner.largest_fitting(job, budget)
    options = []
    if fits["frames"]:
        options.append(f"up to {fits['frames']} frames at {job.width}x{job.height}")
    if fits["size"]:
        options.append(f"{job.frames} frames at up to {fits['size'][0]}x{fits['size'][1]}")
    if job.kind == "tune" and not job.checkpointing:
        on = dataclasses.replace(job, checkpointing=True)
        if planner.plan(on).total <= budget:
            options.append("the same job with gradient checkpointing on")
    advice = "; ".join(options) if options else "nothing of this kind; free memory or use a larger GPU"
    return (
        f"this {job.kind} job ({job.frames} frames at {job.width}x{job.height}, {job.precision}) needs about "
        f"{gib(need)} more on the GPU (planned peak {gib(plan.peak)}, of which {gib(resident)} of weights are "
        f"already there, + {FRAGMENTATION:.0%} allowance), but only {gib(max(0, available))} is free: would fit: "
        f"{advice}. Lower the frame count or size, or close other programs using the GPU"
    )


def check_fits(
    pipe: Any,
    frames: int,
    height: int,
    width: int,
    kind: str,
    *,
    precision: str = "auto",
    checkpointing: Optional[bool] = None,
    device: Optional[torch.device] = None,
) -> None:
    """Refuse, before any work, a CUDA job that the planner says cannot fit the memory left.

    ``device``: where the job will run, when the weights are not there yet (ComfyUI's manager loads a
    pipeline node's weights from the offload device only once the check has passed)."""
    device = torch.device(device) if device is not None else pipe.device
    job = job_for(pipe, kind, frames, height, width, precision=precision, checkpointing=checkpointing, device=device)
    here = pipe.device
    on_device = here.type == device.type and (here.index or 0) == (device.index or 0)
    resident = module_bytes(pipe.unet, pipe.vae, pipe.text_encoder) if on_device else 0
    message = refusal(planner_for(configs_of(pipe)), job, resident, cuda_available(device, resident))
    if message:
        raise InputError(message)


def check_pipeline_job(
    pipe: Any,
    frames: int,
    height: int,
    width: int,
    kind: str,
    *,
    precision: str = "auto",
    checkpointing: Optional[bool] = None,
    device: Any = None,
) -> None:
    """Refuse a job for a loaded pipeline that cannot fit the device it runs on (``device``, default: where
    its weights are): on CUDA the memory planner (:func:`check_fits`) against the free memory,
    elsewhere :func:`tav.job_size.check_job_size`'s estimate. ``precision``/``checkpointing``: tuning's settings."""
    param = next(pipe.unet.parameters())
    target = torch.device(device) if device is not None else param.device
    if target.type == "cuda":
        check_fits(pipe, frames, height, width, kind, precision=precision, checkpointing=checkpointing, device=target)
        return
    weights = module_bytes(pipe.unet, pipe.vae, pipe.text_encoder)
    if kind == "tune":
        weights += weights // 4  # trainable fp32 masters, grads and AdamW moments: a fraction of the UNet
    check_job_size(
        frames,
        height,
        width,
        kind=kind,
        device=target,
        weight_bytes=weights,
        dtype_bytes=param.element_size(),
    )
