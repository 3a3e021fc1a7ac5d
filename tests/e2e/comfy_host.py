"""Paths of the ComfyUI host under test and a handle on its server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from comfy_client import ComfyClient

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """Paths and URL of the running host."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.input = root / "input"
        self.output = root / "output"
        self.temp = root / "temp"
        self.user = root / "user"
        self.models = root / "models"
        self.log = root / "server.log"
        #: while this file exists, the server's next tuning step runs out of memory (then removes it)
        self.oom_flag = root / "inject_oom"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        for d in (self.input, self.output, self.temp, self.user):
            d.mkdir(parents=True, exist_ok=True)
        for d in ("checkpoints", "controlnet", "diffusers", "loras", "tuneavideo", "clip_scoring"):
            (self.models / d).mkdir(parents=True, exist_ok=True)

    def write_model_paths(self) -> Path:
        cfg = self.root / "extra_model_paths.yaml"
        cfg.write_text(
            "tav_e2e:\n"
            f"    base_path: {self.models}\n"
            "    is_default: true\n"
            "    checkpoints: checkpoints\n"
            "    controlnet: controlnet\n"
            "    diffusers: diffusers\n"
            "    loras: loras\n"
            "    tuneavideo: tuneavideo\n"
            "    clip_scoring: clip_scoring\n"
        )
        return cfg

    def start(self) -> None:
        cmd = [
            PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-api-nodes", "--disable-auto-launch",
            "--output-directory", str(self.output), "--input-directory", str(self.input),
            "--temp-directory", str(self.temp), "--user-directory", str(self.user),
            "--database-url", "sqlite:///:memory:",
            "--extra-model-paths-config", str(self.write_model_paths()),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "TAV_E2E_OOM_FLAG": str(self.oom_flag)}
        # fault injection (inject/sitecustomize.py): an out-of-memory error while self.oom_flag exists
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(INJECT), env.get("PYTHONPATH", "")) if p)
        # a fixed memory budget: job-size refusals do not depend on what else the machine runs
        env.setdefault("TAV_MEMORY_BUDGET_GB", str(MEMORY_BUDGET_GB))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=COMFY_DIR, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 180) -> None:
        client = ComfyClient(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {self.proc.returncode} during start-up:\n{self.log_tail()}")
            try:
                if client.request("GET", "/system_stats", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"ComfyUI did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(20)

    def log_tail(self, n: int = 200) -> str:
        if not self.log.is_file():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
