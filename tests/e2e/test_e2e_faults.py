"""A full disk during Save Tuned and Save Video (ENOSPC raised by the writer, and a real full tmpfs), on the
real node classes.

The node classes run in-process against the host's own ``folder_paths`` (no server: a live server
cannot be made to fail its writes from outside), in ``faults_inprocess.py`` run by the host's Python,
which has the host's own dependencies. Each fault must give a clean message naming the file, leave no
partial or temp file, and keep an existing file of the same name intact.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from comfy_host import COMFY_DIR, PYTHON

from tests.bad_inputs import small_disk


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    cmd = [PYTHON, str(Path(__file__).with_name("faults_inprocess.py")), "--comfy-dir", str(COMFY_DIR)]
    cmd += ["--tmp", str(tmp_path_factory.mktemp("faults"))]
    with small_disk(tmp_path_factory.mktemp("small") / "disk", size_kib=2048) as disk:
        res = subprocess.run(cmd + ["--small-disk", str(disk)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    yield json.loads([x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT ") :])


@pytest.mark.parametrize("fmt", ["mp4", "gif", "webp"])
def test_save_video_full_disk(faults: dict, fmt: str) -> None:
    r = faults[fmt]
    assert "disk is full" in r["message"] and r["first"] in r["message"], r
    assert "Traceback" not in r["message"], r
    assert r["intact"] and r["same_files"], r


@pytest.mark.parametrize("fmt", ["mp4", "gif", "webp"])
def test_save_video_on_a_really_full_disk(faults: dict, fmt: str) -> None:
    """The output folder on a real full file system (a small tmpfs): ffmpeg and Pillow meet ENOSPC themselves
    (a full disk used to leave a 0-byte mp4 reported as written)."""
    r = faults[f"disk_{fmt}"]
    assert "disk is full" in r["message"] and r["first"] in r["message"], r
    assert "Traceback" not in r["message"], r
    assert r["intact"] and r["same_files"], r


def test_save_tuned_full_disk(faults: dict) -> None:
    r = faults["tuned"]
    assert "disk is full" in r["message"] and r["first"] in r["message"], r
    assert r["intact"] and r["same_files"], r
