"""Paths of the ComfyUI host under test and the e2e suite's server process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from comfy_process import ComfyProcess, HostDidNotStart

REPO = Path(__file__).resolve().parents[2]
COMFY_DIR = Path(os.environ.get("TAV_COMFY_DIR", REPO / ".venv" / "comfyui"))
PYTHON = os.environ.get("TAV_COMFY_PYTHON", sys.executable)
PACK_LINK = "comfyui-tuneavideo"
SHAPES_MODEL = REPO / "tav" / "assets" / "shapes_model"
#: the clip the shapes workflow loads from the input folder
SHAPES_CLIP = "tav_shapes_red_square.mp4"
#: the test server's memory budget for tav's job-size checks (TAV_MEMORY_BUDGET_GB)
MEMORY_BUDGET_GB = 4
INJECT = REPO / "tests" / "e2e" / "inject"
ARTIFACTS = Path(os.environ.get("TAV_ARTIFACTS", REPO / "tests" / "e2e" / "artifacts"))


class ComfyServer(ComfyProcess):
    """The e2e suite's host: CPU, a fixed memory budget, and an out-of-memory fault it can inject."""

    def __init__(self, root: Path) -> None:
        kinds = ("checkpoints", "controlnet", "diffusers", "loras", "tuneavideo", "clip_scoring")
        super().__init__(root, COMFY_DIR, PYTHON, kinds, name="tav_e2e")
        #: while this file exists, the server's next tuning step runs out of memory (then removes it)
        self.oom_flag = root / "inject_oom"

    def start(self) -> None:
        # fault injection (inject/sitecustomize.py): an out-of-memory error while self.oom_flag exists
        env = {"TAV_E2E_OOM_FLAG": str(self.oom_flag)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(INJECT), os.environ.get("PYTHONPATH", "")) if p)
        # a fixed memory budget: job-size refusals do not depend on what else the machine runs
        env["TAV_MEMORY_BUDGET_GB"] = os.environ.get("TAV_MEMORY_BUDGET_GB", str(MEMORY_BUDGET_GB))
        self.launch(["--cpu"], env)

    def wait_ready(self, timeout: float = 180) -> None:
        try:
            super().wait_ready(timeout)
        except HostDidNotStart as e:
            pytest.fail(str(e))
