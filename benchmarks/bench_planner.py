"""Validate the memory planner (tav.memory_plan) against measured peaks of real CPU runs.

For each configuration a child process (one thread, ``MALLOC_MMAP_THRESHOLD_=65536`` so RSS tracks
live tensor bytes, see _procmem.py) builds the model with random weights and runs the planner's own
phases (``run_phases``: VAE encode + 2 tuning steps, one inversion step, or one guided sampling step
+ VAE decode) on real tensors. Three measurements of the job phase:

- ``rss peak`` (what a GPU user sees as ``torch.cuda.max_memory_allocated``: the job's peak with the
  weights): the phase's resident-set high-water mark (VmHWM, reset before the phase) minus the
  process's RSS just before the model is built (after imports), vs the planned peak;
- ``rss increase``: the same high-water mark minus the RSS at the phase's start, vs the planned
  ``peak - start``: independent of the planner's bookkeeping, but small for no-grad phases, so
  allocator and library overhead (oneDNN scratch, glibc small-chunk heap) weighs heavily in it;
- ``tracker``: :class:`tav.memory_probe.LiveBytes` on the real tensors: the same bookkeeping as the
  planner, so planner vs tracker isolates the fake-tensor run itself.

The planner's figures come from the same phase in its fake run (device "cpu" jobs are
planned without CUDA rounding; "cuda" jobs add CUDA autocast's fp32 ops, on both sides). Output: a
table on stdout, ``--json`` and ``--markdown`` files.

    .venv/bin/python benchmarks/bench_planner.py --json benchmarks/planner_validation.json \
        --markdown benchmarks/planner_validation.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: SD1.5's block widths (320/640/1280/1280, 8 heads, 768-wide context) with one layer per block,
#: and a text encoder of one layer, so a real CPU step takes seconds; "two": the first two widths
MODELS = {
    "sd-widths": {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 1},
    "two-widths": {
        "block_out_channels": [320, 640],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    },
}

#: (model, kind, frames, side, precision, checkpointing, attention, device policy)
CONFIGS = [
    ("sd-widths", "tune", 2, 128, "fp32", False, "flash", "cpu"),
    ("sd-widths", "tune", 4, 128, "fp32", True, "flash", "cpu"),
    ("sd-widths", "tune", 4, 64, "bf16", True, "flash", "cpu"),
    ("sd-widths", "tune", 2, 64, "bf16", False, "flash", "cuda"),
    ("sd-widths", "tune", 4, 64, "fp32", False, "math", "cpu"),
    ("two-widths", "tune", 16, 64, "fp32", False, "flash", "cpu"),
    ("two-widths", "tune", 8, 64, "bf16", True, "flash", "cuda"),
    ("sd-widths", "invert", 8, 64, "fp32", True, "flash", "cpu"),
    ("sd-widths", "sample", 4, 64, "bf16", True, "flash", "cpu"),
    # activations dominate the increase: no checkpointing, more frames and pixels
    ("two-widths", "tune", 16, 128, "fp32", False, "flash", "cpu"),
    ("two-widths", "tune", 8, 128, "fp32", False, "math", "cpu"),
]


def model_configs(name: str):  # noqa: ANN201 - ModelConfigs
    from tav import memory_plan as mp

    base = mp.sd15_configs()
    text = {**base.text_encoder, "num_hidden_layers": 1}
    return dataclasses.replace(base, unet={**base.unet, **MODELS[name]}, text_encoder=text, name=name)


def job_of(cfg: tuple):  # noqa: ANN201 - Job
    from tav import memory_plan as mp

    model, kind, frames, side, precision, ckpt, attention, device = cfg
    return mp.Job(kind, frames, side, side, precision, ckpt, attention, device)


def child(index: int) -> None:
    """Build the model for real and measure its phases (run in a fresh process)."""
    import torch
    from _procmem import PeakMeter, rss_file_kb, rss_kb

    from tav import memory_plan as mp
    from tav.memory_probe import LiveBytes

    torch.set_num_threads(1)
    cfg = CONFIGS[index]
    job = job_of(cfg)
    # every module the job imports, loaded now (diffusers and transformers import lazily), so the
    # baseline is the process after imports: what a GPU's empty allocator corresponds to
    import diffusers.models.modeling_utils  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401

    import tav.ddim  # noqa: F401
    import tav.inflation  # noqa: F401
    import tav.tuning  # noqa: F401

    base = rss_kb() * 1024  # after imports, before the model: what a GPU's allocator would start from
    base_file = rss_file_kb() * 1024
    pipe = mp.build_pipeline(model_configs(cfg[0]), mp.PRECISIONS[job.precision])
    meters: dict[str, PeakMeter] = {}
    files: dict[str, int] = {}

    def probe(phase: str, started: bool) -> None:
        if started:
            meters[phase] = PeakMeter().__enter__()
        else:
            meters[phase].__exit__()
            files[phase] = rss_file_kb() * 1024 - base_file

    t0 = time.perf_counter()
    block = mp.CUDA_BLOCK if job.device == "cuda" else 1
    with LiveBytes(block=block) as live:
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):
            for t in list(m.parameters()) + list(m.buffers()):
                live.adopt(t)
        weights = live.live
        phases = mp.run_phases(pipe, job, live, probe=probe)
    out = {
        "weights": weights,
        "seconds": time.perf_counter() - t0,
        "phases": {
            name: {
                **v,
                "rss_increase": meters[name].increase_kb * 1024,
                "rss_peak": meters[name].peak_kb * 1024 - base,
                "library_pages": files[name],
                "rss_exact": meters[name].exact,
            }
            for name, v in phases.items()
        },
    }
    print("RESULT " + json.dumps(out))


def measure(index: int, timeout: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--child", str(index)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"config {index} failed:\n{proc.stderr[-3000:]}")


def mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--only", help="comma-separated config indexes (default: all)")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--markdown", help="write the table here")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--from-json", help="only re-render --markdown (and --json's summary) from an earlier --json")
    args = p.parse_args()
    if args.child is not None:
        child(args.child)
        return
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        data["summary"] = summarise(data["rows"])
        if args.json:
            Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
        if args.markdown:
            Path(args.markdown).write_text(markdown(data["rows"], data["summary"], data["meta"]))
        return
    import torch

    from tav import memory_plan as mp

    torch.set_num_threads(1)
    indexes = [int(i) for i in args.only.split(",")] if args.only else range(len(CONFIGS))
    planners: dict[str, mp.Planner] = {}
    rows = []
    for i in indexes:
        cfg = CONFIGS[i]
        job = job_of(cfg)
        planner = planners.setdefault(cfg[0], mp.Planner(model_configs(cfg[0])))
        t0 = time.perf_counter()
        plan = planner.plan(job)
        plan_s = time.perf_counter() - t0
        real = measure(i, args.timeout)
        main_phase = job.kind
        fake, got = plan.phases[main_phase], real["phases"][main_phase]
        planned = fake["peak"] - fake["start"]
        row = {
            "index": i,
            "model": cfg[0],
            **dataclasses.asdict(job),
            "phase": main_phase,
            "planned_increase": planned,
            "rss_increase": got["rss_increase"],
            "tracker_increase": got["peak"] - got["start"],
            "planned_peak": fake["peak"],
            "rss_peak": got["rss_peak"],
            "library_pages": got["library_pages"],
            "tracker_peak": got["peak"],
            "planned_activations": plan.activations,
            "planned_weights": plan.weights if main_phase != "tune" else None,
            "error_vs_rss": planned / got["rss_increase"] - 1,
            "error_vs_tracker": planned / (got["peak"] - got["start"]) - 1,
            "peak_error_vs_tracker": fake["peak"] / got["peak"] - 1,
            "peak_error_vs_rss": fake["peak"] / got["rss_peak"] - 1,
            "plan_seconds": plan_s,
            "real_seconds": real["seconds"],
            "rss_exact": got["rss_exact"],
        }
        rows.append(row)
        print(
            f"[{i}] {cfg[0]:10} {job.kind:6} {job.frames:2}f {job.width}px {job.precision} "
            f"ckpt={job.checkpointing!s:5} {job.attention:5} {job.device:4} | increase MiB planned "
            f"{mib(planned)} rss {mib(got['rss_increase'])} ({row['error_vs_rss']:+.1%}) tracker "
            f"{mib(row['tracker_increase'])} ({row['error_vs_tracker']:+.1%}) | peak MiB planned "
            f"{mib(fake['peak'])} rss {mib(got['rss_peak'])} ({row['peak_error_vs_rss']:+.1%}) tracker "
            f"{mib(got['peak'])} ({row['peak_error_vs_tracker']:+.1%}) | "
            f"plan {plan_s:.1f}s real {real['seconds']:.0f}s",
            flush=True,
        )
    summary = summarise(rows)
    print(json.dumps(summary))
    meta = {
        "torch": torch.__version__,
        "threads": 1,
        "malloc_mmap_threshold": 65536,
        "cpu": os.uname().machine,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, summary, meta))


def summarise(rows: list[dict]) -> dict:
    columns = {
        "peak_vs_rss": [r["peak_error_vs_rss"] for r in rows],
        "increase_vs_rss": [r["error_vs_rss"] for r in rows],
        "peak_vs_tracker": [r["peak_error_vs_tracker"] for r in rows],
        "increase_vs_tracker": [r["error_vs_tracker"] for r in rows],
    }
    return {
        "configs": len(rows),
        **{f"max_abs_error_{k}": max(abs(e) for e in v) for k, v in columns.items()},
        **{f"within_10pct_{k}": sum(abs(e) <= 0.10 for e in v) for k, v in columns.items()},
        "max_rss_minus_planned_mib": max(r["rss_increase"] - r["planned_increase"] for r in rows) / 2**20,
        "activation_dominated": [
            r["index"] for r in rows if activation_share(r) > 0.5 and r["planned_activations"] > r["planned_peak"] / 4
        ],
        "max_library_pages_mib": max(r["library_pages"] for r in rows) / 2**20,
    }


def activation_share(row: dict) -> float:
    """The planned activations' share of the planned increase (tuning: the rest is AdamW state and gradients)."""
    return min(1.0, row["planned_activations"] / row["planned_increase"])


def markdown(rows: list[dict], summary: dict, meta: dict) -> str:
    n = summary["configs"]

    def col(key: str) -> str:
        return f"max |error| {summary['max_abs_error_' + key]:.2%}, {summary['within_10pct_' + key]} of {n} within 10 %"

    head = (
        "| # | model | job | frames | px | precision | ckpt | attention | policy | act. share | planned peak MiB "
        "| RSS peak MiB | error | tracker peak MiB | error | planned incr. MiB | RSS incr. MiB | error "
        "| tracker incr. MiB | error |\n" + "|---" * 20 + "|\n"
    )
    lines = [
        f"| {r['index']} | {r['model']} | {r['kind']} | {r['frames']} | {r['width']} | {r['precision']} | "
        f"{'on' if r['checkpointing'] else 'off'} | {r['attention']} | {r['device']} | {activation_share(r):.0%} | "
        f"{mib(r['planned_peak'])} | {mib(r['rss_peak'])} | {r['peak_error_vs_rss']:+.1%} | "
        f"{mib(r['tracker_peak'])} | {r['peak_error_vs_tracker']:+.1%} | {mib(r['planned_increase'])} | "
        f"{mib(r['rss_increase'])} | {r['error_vs_rss']:+.1%} | {mib(r['tracker_increase'])} | "
        f"{r['error_vs_tracker']:+.1%} |"
        for r in rows
    ]
    dominated = ", ".join(f"#{i}" for i in summary["activation_dominated"]) or "none"
    return (
        "# Memory planner vs measured CPU peaks\n\n"
        f"Generated by `benchmarks/bench_planner.py` ({meta['date']}, torch {meta['torch']}, one thread, "
        "`MALLOC_MMAP_THRESHOLD_=65536`: every tensor over 64 KiB is its own mapping, so RSS follows tensor "
        "bytes). Each config runs for real in a fresh process; the job phase (tuning: 2 steps, AdamW state "
        "included; invert: 1 step; sample: 1 guided step) is compared with the plan in four columns:\n\n"
        "- **RSS peak** (the like-for-like measure of what `torch.cuda.max_memory_allocated` reports on a GPU: "
        "the job's peak *including the weights*): the phase's resident-set high-water mark minus the process's "
        "RSS just before the model is built (every module the job imports already imported), vs the planned "
        f"peak. {col('peak_vs_rss')}. It also counts shared-library code paged in as kernels first run (up to "
        f"{summary['max_library_pages_mib']:.0f} MiB here; on a GPU its analogue, the CUDA context, is outside "
        "`max_memory_allocated`), so RSS reads high.\n"
        "- **RSS increase**: the same high-water mark minus the RSS at the phase's start, vs the planned peak "
        f"minus the phase's start. {col('increase_vs_rss')}. RSS is always the larger, by at most "
        f"{summary['max_rss_minus_planned_mib']:.0f} MiB of memory that is not a tensor (allocator and oneDNN "
        "caches, Python objects); where the increase itself is small (one no-grad inversion or sampling step "
        "at 64 px, a small model's tuning) that overhead is most of it, so this column misses 10 % there; it "
        "is memory a GPU's `max_memory_allocated` would not count (it is not tensor memory).\n"
        "- **tracker peak / increase**: `LiveBytes` (the planner's own live-tensor bookkeeping) on the real "
        f"tensors: like with like, it isolates the fake-tensor run. Peak: {col('peak_vs_tracker')}; increase: "
        f"{col('increase_vs_tracker')}.\n\n"
        "*act. share* = the planned activations' share of the planned increase (the rest of a tuning increase "
        "is AdamW state, gradients and the trained weights' copies). Configs where activations are over half the "
        f"increase and over a quarter of the peak (a 20 % activation error would move the RSS peak column by "
        f"over 5 % and the RSS increase column by over 10 %): {dominated}.\n\n" + head + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
