"""Score Edit over the live server's /prompt: numbers equal to tav's on the same frames, the plot previewed,
the CLIP folder list, and bad inputs refused with one clear message."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from comfy_client import ComfyClient, PromptRejected, error_text, status_messages
from comfy_host import ComfyServer
from helpers import TEST_CLIP, combo_options

from tav import metrics
from tav.clip_scoring import load_clip
from tav.video_io import read_video
from tests.tiny_clip import make_tiny_clip, tiny_clip_model

PROMPT = "a red square on a white background"
FOLDER = "clip_scoring"


@pytest.fixture(scope="module")
def clips(comfy_server: ComfyServer) -> dict[str, Path]:
    """A tiny CLIPModel folder, a text-only CLIP folder (wrong kind) in models/clip_scoring."""
    from transformers import CLIPTextModel

    root = comfy_server.models / FOLDER
    good = root / "tiny-clip"
    if not good.exists():
        make_tiny_clip(good)
    text = root / "text-only"
    if not text.exists():
        CLIPTextModel(tiny_clip_model().config.text_config).save_pretrained(text)
    # a good CLIP outside ComfyUI's folders, linked in: must be neither listed nor loaded
    outside = comfy_server.root / "outside-clip"
    if not outside.exists():
        shutil.copytree(good, outside)
    link = root / "linked-out"
    if not link.is_symlink():
        link.symlink_to(outside, target_is_directory=True)
    yield {"good": good, "text": text}
    shutil.rmtree(text, ignore_errors=True)
    link.unlink()


def load(n_frames: int) -> dict:
    return {"class_type": "TAV_LoadVideo",
            "inputs": {"video": TEST_CLIP, "n_frames": n_frames, "start": 0, "stride": 1, "width": 64, "height": 64,
                       "resize": "stretch", "path": ""}}  # fmt: skip


def score_prompt(clip_model: str = "tiny-clip", edit_frames: int = 4, source_frames: int = 4, **inputs: object) -> dict:
    """Load Video (edit) + Load Video (source) -> Score Edit -> Preview Image (the plot)."""
    score = {"edited": ["1", 0], "prompt": PROMPT, "clip_model": clip_model, "batch_size": 3, "source": ["2", 0]}
    score.update(inputs)
    return {
        "1": load(edit_frames),
        "2": load(source_frames),
        "3": {"class_type": "TAV_ScoreEdit", "inputs": score},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 5]}},
    }


def test_clip_folders_are_listed(client: ComfyClient, clips: dict) -> None:
    choices = combo_options(client.object_info()["TAV_ScoreEdit"]["input"]["required"]["clip_model"])
    assert "tiny-clip" in choices and "text-only" not in choices and "linked-out" not in choices
    assert FOLDER in client.get("/models")


def test_score_edit_over_the_api(client: ComfyClient, comfy_server: ComfyServer, clips: dict) -> None:
    _, entry = client.run(score_prompt(), timeout=300)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    ui = entry["outputs"]["3"]
    got = ui["tav_scores"][0]
    assert "frame consistency (all pairs)" in ui["text"][-1]
    # the same frames through tav in this process give the same numbers
    frames = read_video(comfy_server.input / TEST_CLIP, n_frames=4, stride=1, width=64, height=64).frames
    want = metrics.score_edit(load_clip(str(clips["good"]), torch.device("cpu")), frames, PROMPT, frames)
    for key in ("frame_consistency", "frame_consistency_consecutive", "text_alignment", "pickscore"):
        assert got["edit"][key] == pytest.approx(getattr(want.edit, key), abs=1e-5), key
    assert got["source_similarity"] == pytest.approx(1.0, abs=1e-5)  # the edit is its own source here
    assert len(got["edit"]["alignment_per_frame"]) == 4 and len(got["edit"]["consistency_per_step"]) == 3
    images = entry["outputs"]["4"]["images"]
    assert len(images) == 1 and images[0]["type"] == "temp"
    assert list(comfy_server.temp.rglob(images[0]["filename"])), "the plot was not written for the preview"


def _refusal(client: ComfyClient, prompt: dict) -> str:
    try:
        pid = client.queue(prompt)
    except PromptRejected as e:
        assert e.status == 400, e.body
        return " | ".join(
            f"{x['message']}: {x['details']}" for node in e.body.get("node_errors", {}).values() for x in node["errors"]
        )
    entry = client.wait(pid, timeout=300)
    assert entry["status"]["status_str"] == "error", "a bad prompt reported success"
    return status_messages(entry)["execution_error"]["exception_message"]


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda: score_prompt("no-such-clip"), r"'no-such-clip' is not a folder in models/clip_scoring"),
        (lambda: score_prompt("../../../etc"), r"'\.\./\.\./\.\./etc' is not a folder in models/clip_scoring"),
        (lambda: score_prompt("/etc"), r"'/etc' is not a folder in models/clip_scoring"),
        (lambda: score_prompt("linked-out"), r"'linked-out' is not a folder in models/clip_scoring"),
        (lambda: score_prompt("text-only"), r"holds a 'clip_text_model' model, not a CLIPModel"),
        (lambda: score_prompt(source_frames=3), r"source clip has 3 frames but the edit has 4"),
        (lambda: score_prompt(edit_frames=1, source_frames=1), r"has 1 frame\(s\): frame consistency needs at least 2"),
        (lambda: score_prompt(prompt=""), r"prompt to score against is empty"),
        (lambda: score_prompt(batch_size=0), r"batch_size must be at least 1"),
    ],
    ids=[
        "missing-model",
        "path-escape",
        "absolute-path",
        "symlink-out",
        "wrong-kind-folder",
        "frame-count-mismatch",
        "one-frame",
        "empty-prompt",
        "batch-zero",
    ],  # fmt: skip
)
def test_bad_inputs_are_refused(client: ComfyClient, clips: dict, make, expect: str) -> None:  # noqa: ANN001
    message = _refusal(client, make())
    assert re.search(expect, message), message
    assert "Traceback" not in message and 'File "' not in message, message
