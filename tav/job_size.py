"""A simple lower-bound estimate of a job's memory, and the refusal of jobs that surely cannot fit.

Why its own module: :mod:`tav.validation` checks values and is imported by nearly every module; the
question "will this job fit?" belongs with the memory planner (:mod:`tav.memory_plan`, which uses this
estimate off CUDA). Keeping it here, importing only :mod:`tav.validation`, keeps the import graph
acyclic (``tests/test_import_graph.py``). The video reader and Load Video use it to refuse a decode
that cannot fit before any frame is read.

``TAV_MEMORY_BUDGET_GB`` overrides the budget (shared machines, tests).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .validation import InputError

#: bytes of activations per pixel-frame for the UNet part of a job, at 2-byte (fp16/bf16) precision.
#: Deliberately low (a lower bound, not a forecast): only jobs that surely cannot fit are refused.
#: sample/invert: one denoising forward (classifier-free guidance doubles the batch);
#: tune: forward + backward with gradient checkpointing.
ACTIVATION_BYTES = {"load": 0, "invert": 256, "sample": 512, "tune": 1024}
#: VAE encode/decode runs one frame at a time; its peak per pixel of that frame at 2-byte precision
VAE_BYTES_PER_PIXEL = 3072
#: the RGB float32 frames themselves, plus one copy while stacking/resizing
FRAME_BYTES_PER_PIXEL = 24


def estimate_job_bytes(
    frames: int,
    height: int,
    width: int,
    *,
    kind: str,
    weight_bytes: int = 0,
    dtype_bytes: int = 2,
) -> int:
    """A simple lower-bound estimate of the memory a job needs.

    ``weights + frames*pixels*ACTIVATION_BYTES[kind]*s + pixels*VAE_BYTES_PER_PIXEL*s +
    frames*pixels*FRAME_BYTES_PER_PIXEL`` with ``s = dtype_bytes / 2``; ``kind`` "load" (decode and
    resize only), "tune", "invert" or "sample".
    """
    if kind not in ACTIVATION_BYTES:
        raise ValueError(f"kind must be one of {sorted(ACTIVATION_BYTES)}, got {kind!r}")
    pixels = int(height) * int(width)
    scale = max(1, dtype_bytes) / 2
    total = int(frames) * pixels * FRAME_BYTES_PER_PIXEL
    if kind != "load":
        total += int(frames * pixels * ACTIVATION_BYTES[kind] * scale)
        total += int(pixels * VAE_BYTES_PER_PIXEL * scale)
        total += int(weight_bytes)
    return total


def memory_budget(device: Any = "cpu") -> Optional[int]:
    """Bytes a job may use on ``device``: ``TAV_MEMORY_BUDGET_GB`` if set, else the GPU's total memory,
    else the RAM available now; None when unknown (then nothing is refused)."""
    env = os.environ.get("TAV_MEMORY_BUDGET_GB", "").strip()
    if env:
        try:
            return int(float(env) * 2**30)
        except ValueError:
            raise InputError(f"TAV_MEMORY_BUDGET_GB must be a number of GiB, got {env!r}") from None
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        try:
            return int(torch.cuda.get_device_properties(dev).total_memory)
        except (RuntimeError, AssertionError):
            return None
    return _available_ram()


def _available_ram() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_job_size(
    frames: int,
    height: int,
    width: int,
    *,
    kind: str,
    device: Any = "cpu",
    weight_bytes: int = 0,
    dtype_bytes: int = 2,
    budget: Optional[int] = None,
) -> None:
    """Refuse, before any work, a job whose estimated memory exceeds the device's; say what would fit."""
    budget = memory_budget(device) if budget is None else budget
    if budget is None:
        return

    def need(f: int, h: int, w: int) -> int:
        return estimate_job_bytes(f, h, w, kind=kind, weight_bytes=weight_bytes, dtype_bytes=dtype_bytes)

    wanted = need(frames, height, width)
    if wanted <= budget:
        return
    fits = []
    base, per_frame = need(0, height, width), need(1, height, width) - need(0, height, width)
    max_frames = min(frames - 1, (budget - base) // per_frame) if per_frame > 0 and budget > base else 0
    if max_frames >= 1:
        fits.append(f"at {width}x{height} up to {max_frames} frame(s)")
    scale = 1.0
    while scale > 0.01:
        scale *= 0.9
        w8, h8 = max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)
        if need(frames, h8, w8) <= budget:
            fits.append(f"{frames} frames at up to {w8}x{h8}")
            break
    dev = str(device)
    advice = "; ".join(fits) if fits else "nothing of this kind fits; free memory or use a bigger device"
    raise InputError(
        f"this job ({frames} frames at {width}x{height}, {kind} on {dev}) needs at least about {_gib(wanted)}, "
        f"but only {_gib(budget)} is available: would fit: {advice}. Lower the frame count or size"
    )


def module_bytes(*modules: Any) -> int:
    """Bytes held by the parameters and buffers of ``modules`` (for :func:`check_job_size`)."""
    total = 0
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            total += t.numel() * t.element_size()
    return total
