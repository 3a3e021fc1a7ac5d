"""benchmarks/dynamic_vram_check.py against the host under test, on the CPU at its tiny defaults.

One host start of its own (not the session server): the "off" mode runs both paths, "on" is reported
unavailable (``--cpu`` on a host with dynamic VRAM, none at all on an older one). What the check says the
host offers must match the host's own argparse source (comfy/cli_args.py): no flag on the CI host 0.3.75,
both on 0.33.0. The GPU run is the same code with ``--device cuda``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from comfy_host import COMFY_DIR, PYTHON, REPO
from safetensors.torch import load_file

SCRIPT = REPO / "benchmarks" / "dynamic_vram_check.py"
PATH_FIELDS = {"ok", "wall_s", "gpu_used_before_bytes", "gpu_used_peak_bytes", "latent", "shape", "finite", "std"}


def _log_tails(work: Path) -> str:
    return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-60:])
                     for p in sorted(work.glob("server_*.log")))  # fmt: skip


def test_dynamic_vram_check_on_cpu(tmp_path: Path) -> None:
    out, work = tmp_path / "check.json", tmp_path / "work"
    cmd = [sys.executable, str(SCRIPT), "--comfy-dir", str(COMFY_DIR), "--comfy-python", PYTHON]
    cmd += ["--device", "cpu", "--work-dir", str(work), "--out", str(out)]
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    print(f"dynamic_vram_check.py on the CPU: {time.monotonic() - t0:.0f} s")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:] + _log_tails(work)
    result = json.loads(out.read_text())
    assert json.loads(res.stdout) == result
    assert {"comfy_dir", "settings", "host_flags", "checkpoint", "modes", "comparison", "ok", "seconds"} <= set(result)
    s = result["settings"]
    assert (s["device"], s["frames"], s["size"], s["steps"], s["tune_steps"]) == ("cpu", 2, 32, 2, 1)

    cli_args = (COMFY_DIR / "comfy" / "cli_args.py").read_text()
    offered = sorted(f for f in ("--disable-dynamic-vram", "--enable-dynamic-vram") if f'"{f}"' in cli_args)
    assert result["host_flags"] == offered

    off, on = result["modes"]["off"], result["modes"]["on"]
    assert off["available"] and off["ok"], off
    assert off["host_args"] == ["--cpu", *(["--disable-dynamic-vram"] if offered else [])]
    assert off["dynamic_vram_active"] is False and off["startup_s"] > 0
    for name in ("native", "pipeline"):
        row = off["paths"][name]
        assert set(row) == PATH_FIELDS and row["ok"] and row["wall_s"] > 0, row
        assert row["gpu_used_before_bytes"] is None and row["gpu_used_peak_bytes"] is None
        assert row["latent"].startswith(f"dynamic_vram/off_{name}")
        x = load_file(str(work / "output" / row["latent"]))["latent_tensor"]
        assert list(x.shape) == row["shape"] == [2, 4, 4, 4]  # frames as the batch, 32 px / 8
        assert torch.isfinite(x).all() and float(x.std()) > 1e-3 and row["finite"]

    assert set(on) == {"available", "why"} and on["available"] is False
    assert ("--cpu" if offered else "no dynamic VRAM") in on["why"]
    assert result["comparison"] is None and result["ok"] is True
    assert not list((work / "output").glob("dynamic_vram/on_*"))  # the unavailable mode did not run
