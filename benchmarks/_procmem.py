"""Process memory probes for CPU benchmarks (stdlib only: imported by both benchmark venvs).

Torch's CPU allocator has no ``max_memory_allocated``, so peak memory is read from the kernel:
``VmHWM`` (the resident-set high-water mark) in ``/proc/self/status``, which Linux (>= 4.0) resets
to the current RSS when ``5`` is written to ``/proc/self/clear_refs``. A phase's peak is
``VmHWM`` after the phase minus ``VmRSS`` right before it, with the high-water mark reset in between.
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the fallback where the reset is not allowed; it
can only grow, so it over-reports phases that come after a larger one.

RSS only drops when the C allocator gives memory back to the kernel. glibc reuses freed heap
chunks below its (dynamic, up to 32 MiB) mmap threshold, so memory freed by one step can be
reused unseen by the next and a baseline can include cached free memory. The memory runs of
``bench_steps.py`` therefore set ``MALLOC_MMAP_THRESHOLD_=65536`` (a fixed threshold: every
tensor above 64 KiB is its own mapping and returns to the kernel when freed), which makes RSS
track live tensor bytes closely. Timing runs keep glibc's defaults.
"""

from __future__ import annotations

import re
import resource

_STATUS = "/proc/self/status"


def _status_kb(field: str) -> int:
    with open(_STATUS) as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    if m is None:
        raise RuntimeError(f"{field} not in {_STATUS}")
    return int(m.group(1))


def rss_kb() -> int:
    """Current resident set size in KiB."""
    return _status_kb("VmRSS")


def rss_file_kb() -> int:
    """File-backed resident pages in KiB: mostly shared-library code, paged in as new kernels first run."""
    return _status_kb("RssFile")


def reset_peak() -> bool:
    """Reset the RSS high-water mark to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_kb() -> int:
    """RSS high-water mark in KiB since the last :func:`reset_peak` (or process start)."""
    try:
        return _status_kb("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class PeakMeter:
    """``with PeakMeter() as m: ...`` then ``m.base_kb`` (RSS before), ``m.peak_kb`` (high-water mark)."""

    def __init__(self) -> None:
        self.base_kb = 0
        self.peak_kb = 0
        self.exact = False

    def __enter__(self) -> PeakMeter:
        self.base_kb = rss_kb()
        self.exact = reset_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_kb = peak_kb()

    @property
    def increase_kb(self) -> int:
        return max(0, self.peak_kb - self.base_kb)

    def as_dict(self) -> dict:
        return {"base_kb": self.base_kb, "peak_kb": self.peak_kb, "increase_kb": self.increase_kb, "exact": self.exact}


def run_worker(script: str, case: dict) -> dict:
    """``script --worker CASE_JSON`` in a fresh process with the fixed mmap threshold (see above), so
    each case's RSS is its own; returns the case with the JSON the worker printed last."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, script, "--worker", json.dumps(case)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"case {case} failed:\n{out.stderr[-3000:]}")
    return {**case, **json.loads(out.stdout.strip().splitlines()[-1])}
