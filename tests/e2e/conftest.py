"""A live ComfyUI 0.3.75 host for the end-to-end tests (session-scoped).

The host is installed by ``scripts/setup_comfy_host.sh`` into ``.venv/comfyui`` (override with
TAV_COMFY_DIR; the Python that runs it with TAV_COMFY_PYTHON). The server runs with ``--cpu
--listen 127.0.0.1`` on a free port, API nodes off, with its input/output/temp/user folders and an
extra model folder (checkpoints, diffusers, tuneavideo) under a pytest temp dir. It is stopped by
PID at the end of the session; a failing test gets the tail of the server log in its report.

Nothing here skips: a missing host, model or browser is a test failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from comfy_client import ComfyClient
from comfy_host import ARTIFACTS, COMFY_DIR, PACK_LINK, PYTHON, REPO, SHAPES_CLIP, SHAPES_MODEL, ComfyServer

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_SERVER_LOG: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end test against a live ComfyUI server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _SERVER_LOG and _SERVER_LOG[0].is_file():
        lines = _SERVER_LOG[0].read_text(errors="replace").splitlines()
        rep.sections.append(("ComfyUI server log (last 150 lines)", "\n".join(lines[-150:])))


def _check_host() -> None:
    problems = []
    if not (COMFY_DIR / "main.py").is_file():
        problems.append(f"no ComfyUI at {COMFY_DIR}")
    link = COMFY_DIR / "custom_nodes" / PACK_LINK
    if not link.exists() or link.resolve() != REPO:
        problems.append(f"{link} does not point at {REPO}")
    if problems:
        pytest.fail("ComfyUI host not installed (run scripts/setup_comfy_host.sh): " + "; ".join(problems))


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """Start ComfyUI once per session, with test models and a test clip in its folders."""
    _check_host()
    from tiny_models import make_clip, make_tiny_diffusers

    server = ComfyServer(tmp_path_factory.mktemp("comfy"))
    _SERVER_LOG[:] = [server.log]
    server.start()
    try:
        # build the assets while the server boots
        shapes = server.models / "diffusers" / "tav-shapes"
        if (SHAPES_MODEL / "model_index.json").is_file():
            shapes.symlink_to(SHAPES_MODEL, target_is_directory=True)
        else:
            make_tiny_diffusers(shapes)
        make_clip(server.input / SHAPES_CLIP)
        server.wait_ready()
        client = ComfyClient(server.url)
        client.request("POST", "/settings/Comfy.TutorialCompleted", True)
        yield server
    finally:
        server.stop()
        print(f"\nComfyUI server log: {server.log}")


@pytest.fixture(scope="session")
def tiny_sd15(comfy_server: ComfyServer) -> str:
    """A random-weight SD1.5-shaped checkpoint in models/checkpoints; returns its name."""
    name = "tiny_sd15.safetensors"
    out = comfy_server.models / "checkpoints" / name
    if not out.is_file():
        cmd = [PYTHON, str(REPO / "scripts" / "make_tiny_sd15.py"), str(out), "--comfy-dir", str(COMFY_DIR)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"make_tiny_sd15.py failed:\n{res.stdout}\n{res.stderr}"
    return name


@pytest.fixture(scope="session")
def controlnet(comfy_server: ComfyServer, tiny_sd15: str) -> str:
    """A random-weight SD1.5-shaped ControlNet in models/controlnet; returns its name."""
    name = "tiny_sd15_controlnet.safetensors"
    out = comfy_server.models / "controlnet" / name
    if not out.is_file():
        cmd = [PYTHON, str(REPO / "scripts" / "make_tiny_sd15.py"), str(out), "--controlnet"]
        res = subprocess.run(cmd + ["--comfy-dir", str(COMFY_DIR)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    return name


@pytest.fixture(scope="session")
def client(comfy_server: ComfyServer) -> Iterator[ComfyClient]:
    c = ComfyClient(comfy_server.url)
    c.connect_ws()
    yield c
    c.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium() -> str:
    exe = os.environ.get("TAV_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("Debian's chromium is not installed (scripts/setup_comfy_host.sh installs it)")
    return exe
