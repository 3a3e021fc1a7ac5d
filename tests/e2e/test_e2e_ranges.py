"""The nodes at their steps maximum (1000): DDIM Invert, Sample and DDIM Sigmas, on the host's own modules.

Each used to end in ``IndexError: index 1000 is out of bounds`` after all the work. The checks run in
``ranges_inprocess.py`` with the host's Python (newer hosts import dependencies of their own); the UNet
call is replaced by a cheap stand-in, the nodes, the schedule, the VAE and ComfyUI's sampler are real.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from comfy_host import COMFY_DIR, PYTHON


@pytest.fixture(scope="module")
def ranges() -> dict:
    cmd = [PYTHON, str(Path(__file__).with_name("ranges_inprocess.py")), "--comfy-dir", str(COMFY_DIR)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads([x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT ") :])


def test_invert_and_sample_nodes_at_1000_steps(ranges: dict) -> None:
    assert ranges["invert_timesteps"] == list(range(1000)) and ranges["inverted_steps"] == 1000
    assert ranges["sample_timesteps"] == list(range(999, -1, -1))
    assert ranges["images_shape"] == [2, 8, 8, 3] and ranges["latent_finite"]


def test_ddim_sigmas_node_at_1000_steps_runs_in_comfys_sampler(ranges: dict) -> None:
    """ComfyUI's own SD sigma table: 1000 strictly descending sigmas (t = 999..0), and its Euler (= ddim)
    sampler takes all 999 steps to a finite result."""
    assert ranges["sigmas_shape"] == [1000] and ranges["sigmas_descending"]
    assert ranges["sigmas_vs_table"] < 1e-6
    assert ranges["euler_calls"] == 999 and ranges["euler_finite"]
