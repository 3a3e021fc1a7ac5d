"""benchmarks/gpu_check.py runs end to end on the CPU at a tiny size (the GPU run is the same code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_tiny_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(res.stdout) == result
    assert [(r["precision"], r["frames"]) for r in result["tuning"]] == [("bf16", 2), ("fp16", 2)]
    for row in result["tuning"]:
        assert row["step_seconds"] > 0
        # on the CPU both sides count live tensor bytes: the planner must match the real run
        assert 0.95 < row["planned_over_measured"] < 1.05, row
    inference = result["inference"]
    for kind in ("invert", "sample"):
        assert inference[f"{kind}_step_seconds"] > 0
        assert abs(inference[f"{kind}_planned_peak"] / inference[f"{kind}_max_memory_allocated"] - 1) < 0.05
    assert inference["sdpa_ops_in_unet"] and "math" not in inference["sdpa_ops_in_unet"]
    assert set(result["sdpa_by_head_dim"]) == {"40", "64", "80", "160"}
    assert all(v["fused_kernel_runs"] is True for v in result["sdpa_by_head_dim"].values())
    diff = result["bf16_vs_fp32_unet"]
    assert 0 < diff["relative_l2"] < 0.1  # bf16 rounding: small, but not zero (it did run in bf16)
    scoring = result["scoring"]
    assert scoring["model"] == "tiny" and scoring["frames_scored_per_run"] == 4 and scoring["seconds_per_frame"] > 0
