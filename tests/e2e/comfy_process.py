"""A ComfyUI server process on throw-away folders: start it, wait until it answers, stop it.

No pytest here: the e2e suite (``comfy_host.ComfyServer``) and ``benchmarks/dynamic_vram_check.py`` both
run hosts through it, and the benchmark is a plain script.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

from comfy_client import ComfyClient


class HostDidNotStart(RuntimeError):
    """The server exited or stayed silent during start-up; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyProcess:
    """ComfyUI from ``comfy_dir`` run by ``python`` on folders under ``root``, with models from
    ``root/models/<kind>`` for each kind in ``model_kinds`` (one extra_model_paths.yaml entry named ``name``).
    Each start takes a fresh port."""

    def __init__(self, root: Path, comfy_dir: Path, python: str, model_kinds: Sequence[str], name: str) -> None:
        self.root, self.comfy_dir, self.python, self.name = root, Path(comfy_dir), python, name
        self.input, self.output, self.temp = root / "input", root / "output", root / "temp"
        self.user, self.models = root / "user", root / "models"
        self.model_kinds = tuple(model_kinds)
        for d in (self.input, self.output, self.temp, self.user, *(self.models / k for k in self.model_kinds)):
            d.mkdir(parents=True, exist_ok=True)
        self.log = root / "server.log"
        self.port = 0  # each launch() picks a free one
        self.url = ""
        self.proc: Optional[subprocess.Popen] = None

    def write_model_paths(self) -> Path:
        cfg = self.root / "extra_model_paths.yaml"
        kinds = "".join(f"    {k}: {k}\n" for k in self.model_kinds)
        cfg.write_text(f"{self.name}:\n    base_path: {self.models}\n    is_default: true\n{kinds}")
        return cfg

    def launch(self, args: Sequence[str], env: Mapping[str, str], log: Optional[Path] = None) -> None:
        """Start ``main.py`` on a fresh port with the folder flags, ``args`` and ``env`` over os.environ."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or self.log
        cmd = [
            self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
            "--output-directory", str(self.output), "--input-directory", str(self.input),
            "--temp-directory", str(self.temp), "--user-directory", str(self.user),
            "--extra-model-paths-config", str(self.write_model_paths()), *args,
        ]  # fmt: skip
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", **env}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=out, stderr=subprocess.STDOUT, env=full_env)

    def wait_ready(self, timeout: float) -> None:
        """Return once ``/system_stats`` answers 200; raise :class:`HostDidNotStart` if the server exits
        first or ``timeout`` seconds pass."""
        client = ComfyClient(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None, "launch() first"
            if self.proc.poll() is not None:
                raise HostDidNotStart(f"ComfyUI exited with {self.proc.returncode} during start-up:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if client.request("GET", "/system_stats", timeout=5)[0] == 200:
                    return
            time.sleep(0.5)
        raise HostDidNotStart(f"ComfyUI did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self, grace: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(grace)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def log_tail(self, n: int = 200) -> str:
        return "\n".join(self.log_text().splitlines()[-n:]) or "(no log)"
