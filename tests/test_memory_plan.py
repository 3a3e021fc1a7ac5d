"""The memory planner (tav.memory_plan): fake runs match real runs, the breakdown adds up, the CUDA
emulation keeps CUDA autocast's fp32 tensors, refusals say what fits, and an out-of-memory error
mid-run releases everything the run held."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tav import memory_plan as mp
from tav.cli import main as cli_main
from tav.inflation import VideoUNet, inflate
from tav.memory_probe import CudaAutocastPolicy, LiveBytes
from tav.out_of_memory import OutOfMemory
from tav.tuning import TuneConfig, tune
from tests.tiny import tiny_pipeline


@pytest.fixture(scope="module")
def configs() -> mp.ModelConfigs:
    return mp.configs_of(tiny_pipeline())


@pytest.fixture(scope="module")
def planner(configs: mp.ModelConfigs) -> mp.Planner:
    return mp.planner_for(configs)  # the CLI's planner too: plans are shared (fake runs take seconds)


def _real(configs: mp.ModelConfigs, job: mp.Job) -> tuple[int, dict]:
    """The job run here as a user runs it (not through the planner's run_phases), on real tensors,
    each phase measured by the same live-bytes tracker."""
    from tav import ddim

    pipe = mp.build_pipeline(configs, mp.PRECISIONS[job.precision]).replace(vae_batch=job.vae_batch)
    k, c = pipe.latent_factor, pipe.unet.config.in_channels
    latents = torch.zeros(1, c, job.frames, job.height // k, job.width // k)
    embeds = torch.zeros(1, 77, pipe.text_encoder.config.hidden_size)
    cuda_autocast = job.device == "cuda" and job.precision != "fp32"
    phases: dict = {}
    with LiveBytes(block=mp.CUDA_BLOCK if job.device == "cuda" else 1) as live:
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):
            for t in list(m.parameters()) + list(m.buffers()):
                live.adopt(t)
        weights = live.live

        def phase(name: str, fn) -> None:
            live.reset_peak()
            with mp.emulation(cuda_autocast=cuda_autocast, math_attention=job.attention == "math"):
                fn()
            phases[name] = {"peak": live.peak}

        if job.kind == "tune":
            phase("encode", lambda: pipe.encode_video(torch.zeros(job.vae_batch, job.height, job.width, 3)))
            cfg = TuneConfig(steps=2, precision=job.precision, gradient_checkpointing=job.checkpointing)
            phase("tune", lambda: tune(pipe, latents, embeds, cfg))
        else:
            phase("sample", lambda: ddim.sample(pipe, embeds, negative_embeds=embeds, latents=latents, steps=1))
            phase("decode", lambda: pipe.decode_latents(latents[:, :, : job.vae_batch]))
    return weights, phases


TUNE_CPU = mp.Job("tune", 4, 64, 64, "fp32", False, device="cpu")
TUNE_CUDA = mp.Job("tune", 4, 64, 64, "bf16", True, device="cuda")  # what `plan` on the CLI asks below
JOBS = [
    TUNE_CPU,
    TUNE_CUDA,
    dataclasses.replace(TUNE_CPU, attention="math"),
    mp.Job("sample", 4, 64, 64, "bf16", device="cuda"),
]


@pytest.mark.parametrize(
    "job", JOBS, ids=lambda j: f"{j.kind}-{j.precision}-{j.checkpointing}-{j.attention}-{j.device}"
)
def test_fake_run_matches_real_run(configs, planner, job: mp.Job) -> None:
    plan = planner.plan(job)
    weights, phases = _real(configs, job)
    assert plan.phases.keys() == phases.keys()
    for name, real in phases.items():
        assert plan.phases[name]["peak"] == pytest.approx(real["peak"], rel=0.01), name
    assert plan.peak == pytest.approx(max(p["peak"] for p in phases.values()), rel=0.01)
    assert plan.weights >= weights


def test_breakdown_adds_up(configs, planner) -> None:
    plan = planner.plan(TUNE_CUDA)
    n = mp.trainable_numel(mp.build_pipeline(configs, torch.bfloat16).unet)
    assert plan.gradients == 4 * n and plan.optimizer == 8 * n
    assert plan.peak == plan.weights + plan.optimizer + plan.gradients + plan.activations
    assert plan.activations > 0 and plan.phase == "tune"
    assert plan.allowance == mp.CONTEXT_BYTES + int(plan.peak * mp.FRAGMENTATION)
    assert plan.total == plan.peak + plan.allowance
    assert planner.plan(TUNE_CPU).allowance == 0


def test_peak_grows_with_frames_and_math_attention(planner) -> None:
    peak = planner.plan(TUNE_CUDA).peak
    assert planner.plan(dataclasses.replace(TUNE_CUDA, frames=6)).peak > peak
    assert planner.plan(dataclasses.replace(TUNE_CPU, attention="math")).peak > planner.plan(TUNE_CPU).peak


def test_cuda_policy_runs_norms_in_fp32_also_when_recomputed() -> None:
    ln = torch.nn.LayerNorm(8).bfloat16()
    x = torch.randn(2, 8, dtype=torch.bfloat16, requires_grad=True)
    seen = []

    def block(t: torch.Tensor) -> torch.Tensor:
        y = ln(t)
        seen.append(y.dtype)
        return y

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ln(x).dtype == torch.bfloat16  # CPU autocast alone keeps LayerNorm in bf16
    with CudaAutocastPolicy():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        # backward recomputes the block without torch-function modes; a bf16 recomputation of the
        # fp32 forward would raise checkpoint's metadata-mismatch CheckpointError
        out.float().sum().backward()
    assert seen[0] == torch.float32
    assert x.grad is not None


def test_read_configs_reads_no_weights(tmp_path: Path, configs) -> None:
    for name, cfg in (("unet", configs.unet), ("vae", configs.vae), ("text_encoder", configs.text_encoder)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        (tmp_path / name / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    read = mp.read_configs(str(tmp_path))
    assert read.unet["block_out_channels"] == list(configs.unet["block_out_channels"])
    assert mp.read_configs(None).unet["block_out_channels"] == [320, 640, 1280, 1280]
    with pytest.raises(ValueError, match="no unet/config.json"):
        mp.read_configs(str(tmp_path / "vae"))
    with pytest.raises(ValueError, match="no such folder or file"):
        mp.read_configs(str(tmp_path / "missing"))


def test_refusal_says_what_fits_and_it_does(planner) -> None:
    job = dataclasses.replace(TUNE_CUDA, frames=6)
    plan = planner.plan(job)
    resident = plan.weights // 2
    assert mp.refusal(planner, job, resident, available=plan.peak * 2) is None
    small = planner.plan(dataclasses.replace(job, frames=4))
    available = small.peak - resident + int(small.peak * mp.FRAGMENTATION)
    message = mp.refusal(planner, job, resident, available)
    assert message is not None and "would fit: up to 4 frames at 64x64" in message
    budget = available + resident + mp.CONTEXT_BYTES
    assert planner.plan(dataclasses.replace(job, frames=4)).total <= budget
    assert planner.plan(dataclasses.replace(job, frames=5)).total > budget
    nothing = mp.refusal(planner, job, resident, available=0)
    assert nothing is not None and "nothing of this kind" in nothing


def test_cli_plan(tmp_path: Path, configs, capsys) -> None:
    for name, cfg in (("unet", configs.unet), ("vae", configs.vae), ("text_encoder", configs.text_encoder)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    args = ["plan", "--model", str(tmp_path), "--frames", "4", "--width", "64", "--height", "64"]
    vram = (mp.planner_for(configs).plan(dataclasses.replace(TUNE_CUDA, frames=5)).total + 1) / 2**30
    assert cli_main([*args, "--vram", str(vram)]) == 0
    out = capsys.readouterr().out
    assert "weights" in out and "activations" in out and "allowance" in out
    assert "this job fits" in out and "most frames at 64x64: 5" in out
    assert cli_main([*args[:3], "--frames", "0"]) == 2
    assert "--frames" in capsys.readouterr().err


def _oom_on_call(monkeypatch: pytest.MonkeyPatch, n: int) -> list:
    """Make the n-th VideoUNet call raise CUDA's out-of-memory error; returns weakrefs to its inputs."""
    import weakref

    real = VideoUNet.forward
    calls: list = []

    def forward(self: VideoUNet, sample: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(weakref.ref(sample))
        if len(calls) == n:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, sample, *args, **kwargs)

    monkeypatch.setattr(VideoUNet, "forward", forward)
    return calls


def test_out_of_memory_mid_tuning_releases_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = inflate(tiny_pipeline())
    latents, embeds = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 77, 32)
    calls = _oom_on_call(monkeypatch, 2)
    with LiveBytes() as live:
        for t in [latents, embeds, *pipe.unet.parameters(), *pipe.unet.buffers()]:
            live.adopt(t)  # what existed before the run (else a view of a weight counts it as new)
        before = live.live
        with pytest.raises(OutOfMemory) as info:
            tune(pipe, latents, embeds, TuneConfig(steps=3))
        assert live.live == before  # the tuned copy, AdamW state, activations: all gone
    err = info.value
    assert "tune ran out of device memory" in str(err) and "gradient checkpointing" in str(err)
    assert err.__context__ is None and err.__cause__ is None  # nothing keeps the run's frames alive
    assert all(ref() is None for ref in calls)
    monkeypatch.undo()
    assert len(tune(pipe, latents, embeds, TuneConfig(steps=1)).losses) == 1  # the next job runs


def test_out_of_memory_mid_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    from tav import ddim

    pipe = inflate(tiny_pipeline())
    _oom_on_call(monkeypatch, 1)
    with pytest.raises(OutOfMemory, match="sample ran out of device memory.*windows"):
        ddim.sample(pipe, torch.randn(1, 77, 32), latents=torch.randn(1, 4, 2, 8, 8), steps=2)


def test_job_for_a_loaded_pipeline(configs) -> None:
    """What check_fits plans for a pipeline: its weight type, tuning's autocast, the user's checkpointing
    (default: on for CUDA, where it is what makes tuning fit, off on the CPU)."""
    pipe = inflate(tiny_pipeline())
    assert mp.configs_of(pipe) == configs
    assert mp.job_for(pipe, "tune", 4, 64, 64) == mp.Job("tune", 4, 64, 64, "fp32", False, "flash", "cpu")
    on = mp.job_for(pipe, "tune", 4, 64, 64, precision="bf16", checkpointing=True)
    assert (on.precision, on.checkpointing) == ("bf16", True)
    cuda = torch.device("cuda")
    assert mp.job_for(pipe, "tune", 4, 64, 64, device=cuda).checkpointing is True
    assert mp.job_for(pipe, "tune", 4, 64, 64, device=cuda, checkpointing=False).checkpointing is False
    raw = tiny_pipeline()
    half = inflate(raw.replace(unet=raw.unet.to(torch.bfloat16)))
    assert mp.job_for(half, "tune", 4, 64, 64).precision == "bf16"  # auto follows half weights
    assert mp.job_for(half, "sample", 4, 64, 64).precision == "bf16"


def test_checkpointing_lowers_the_planned_tuning_peak(planner) -> None:
    """Gradient checkpointing trades compute for activations: the plan must show it, or it passes CUDA
    jobs that run out of memory (checkpointing off) or refuses ones that fit (on)."""
    off = planner.plan(dataclasses.replace(TUNE_CUDA, checkpointing=False))
    on = planner.plan(TUNE_CUDA)
    assert on.activations < 0.8 * off.activations


def test_check_plans_for_the_device_the_job_will_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ComfyUI loader leaves the weights on the offload device (the CPU) until a node runs: the check
    still plans a CUDA job, with no weights counted as already on the GPU."""
    from tav.memory_plan import check_pipeline_job
    from tav.validation import InputError

    pipe = inflate(tiny_pipeline())
    seen: dict = {}

    def available(device: torch.device, resident: int) -> int:
        seen.update(device=device, resident=resident)
        return 0

    monkeypatch.setattr(mp, "cuda_available", available)
    with pytest.raises(InputError, match="invert job .* needs about"):
        check_pipeline_job(pipe, 4, 64, 64, "invert", device=torch.device("cuda"))
    assert seen == {"device": torch.device("cuda"), "resident": 0}
    assert mp.job_for(pipe, "invert", 4, 64, 64, device=torch.device("cuda")).device == "cuda"
    check_pipeline_job(pipe, 4, 64, 64, "invert")  # on the CPU: the simple estimate, which fits


FRAMES = list(range(1, mp.MAX_FRAMES + 1))
SIDES = list(range(1, 65))  # sizes: 64 px steps up to 4096, cost read along the pixel count


@pytest.mark.parametrize(
    ("items", "cost", "exact"),
    [
        (FRAMES, lambda f: 3_441_697_280 + 17_333_298_688 * f, True),  # SD1.5 tuning at 4096x4096 (planned)
        (FRAMES, lambda f: 3_000 + 5 * f + f * f, True),  # the math kernel's temporal scores: quadratic
        (FRAMES, lambda f: 5_000 + 40 * f - f * f // 60, True),  # bent the other way
        (SIDES, lambda m: 2_500_000 + 3_000 * m * m, True),  # fused kernels: linear in pixels
        (SIDES, lambda m: 2_500_000 + 30 * m * m + 20 * m**4, True),  # math kernel: quadratic in pixels
        (FRAMES, lambda f: 1_000 + 900 * (f // 100), False),  # steps
        (FRAMES, lambda f: 10**9 if f > 700 else f, False),  # a cliff
    ],
    ids=["linear", "quadratic", "concave", "pixels-flash", "pixels-math", "steps", "cliff"],
)
def test_what_fits_search_is_bounded_and_right(items: list[int], cost, exact: bool) -> None:
    """Any increasing cost: at most SEARCH_PLANS plans and never an answer over budget; the exact edge
    for the shapes memory takes (linear or quadratic in frames and in pixels)."""
    x = (lambda m: m * m) if items is SIDES else float
    calls: list[int] = []
    for n in (1, 2, 5, 37, len(items) // 2, len(items) - 1, len(items)):
        for budget in (cost(n), cost(n) + 1, cost(n + 1) - 1):
            edge = max((i for i, m in enumerate(items) if cost(m) <= budget), default=None)
            calls.clear()
            i = mp.largest_within(items, lambda m: calls.append(m) or cost(m), budget, x=x, start=len(items) - 1)
            assert len(calls) <= mp.SEARCH_PLANS, calls
            assert (i is None) == (edge is None)
            assert i is None or cost(items[i]) <= budget
            if exact:
                assert i == edge, (budget, i, edge, calls)
    assert mp.largest_within(items, cost, cost(items[0]) - 1) is None
