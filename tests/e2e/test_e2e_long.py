"""Long clips on the pipeline nodes: the long-clip workflow over the HTTP queue, windows, errors."""

from __future__ import annotations

import copy

import pytest
from comfy_client import ComfyClient, error_text
from comfy_host import ComfyServer
from helpers import TEST_CLIP, load_api, node_of, nodes_of, saved_files, set_inputs

from tav.video_io import read_video

WINDOW, OVERLAP, FRAMES, STEPS = 4, 1, 8, 2


@pytest.fixture(scope="module")
def long_prompt() -> dict:
    """The shipped long-clip workflow on the 8-frame test clip: tune on 4 frames (stride 2), edit all 8
    in windows of 4 (overlap 1: windows 0-3, 3-6, 4-7)."""
    p = copy.deepcopy(load_api("tav_shapes_long_clip"))
    tune_video, edit_video = sorted(nodes_of(p, "TAV_LoadVideo"), key=lambda k: p[k]["inputs"]["n_frames"])
    p[tune_video]["inputs"].update(video=TEST_CLIP, n_frames=WINDOW, stride=2)
    p[edit_video]["inputs"].update(video=TEST_CLIP, n_frames=FRAMES, stride=1)
    set_inputs(p, "TAV_Tune", steps=2, gradient_checkpointing=False)
    set_inputs(p, "TAV_DDIMInvert", steps=STEPS, window=WINDOW, overlap=OVERLAP)
    set_inputs(p, "TAV_Sample", steps=STEPS, frames=FRAMES)
    return p


def test_long_clip_workflow_edits_every_frame_with_progress_over_windows(
    client: ComfyClient, comfy_server: ComfyServer, long_prompt: dict
) -> None:
    pid, entry = client.run(long_prompt, timeout=300)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    record = saved_files(entry, node_of(long_prompt, "TAV_SaveVideo"))[0]
    clip = read_video(
        comfy_server.output / record["subfolder"] / record["filename"], n_frames=0, stride=1, resize="none"
    )
    assert clip.frames.shape == (FRAMES, 64, 64, 3)
    windows = 3  # [0, 4), [3, 7), [4, 8)
    for cls in ("TAV_DDIMInvert", "TAV_Sample"):  # Sample (window 0) reuses the inversion's windows
        events = [m["data"] for m in client.events(pid, "progress") if m["data"]["node"] == node_of(long_prompt, cls)]
        steps = [e["value"] for e in events if e["max"] == STEPS * windows]  # not the VAE's per-frame progress
        # one bar over all windows' steps, counting up to its end (newer hosts coalesce the messages they
        # send, so there may be fewer messages than steps)
        assert steps and steps[-1] == STEPS * windows and steps == sorted(steps), (cls, events)


@pytest.mark.parametrize(
    ("node", "change", "words"),
    [
        ("TAV_DDIMInvert", {"window": 4, "overlap": 4}, "smaller than the window"),
        ("TAV_Sample", {"window": 1}, "at least 2"),
    ],
)
def test_impossible_windows_are_rejected_before_running(
    client: ComfyClient, long_prompt: dict, node: str, change: dict, words: str
) -> None:
    p = copy.deepcopy(long_prompt)
    bad = node_of(p, node)
    p[bad]["inputs"].update(change)
    status, body = client.request("POST", "/prompt", {"prompt": p, "client_id": client.client_id})
    # ComfyUI still runs the graph's other valid outputs (loss preview, Save Tuned), never the bad node
    assert status in (200, 400), body
    assert words in str(body["node_errors"][bad]), body
    if status == 200:
        entry = client.wait(body["prompt_id"], timeout=300)
        assert node_of(p, "TAV_SaveVideo") not in entry["outputs"]


def test_window_longer_than_the_clip_is_a_clear_error(client: ComfyClient, long_prompt: dict) -> None:
    p = copy.deepcopy(long_prompt)
    p[node_of(p, "TAV_DDIMInvert")]["inputs"]["window"] = FRAMES + 4
    pid, entry = client.run(p, timeout=300)
    assert entry["status"]["status_str"] == "error"
    assert f"window ({FRAMES + 4} frames) is longer than the clip ({FRAMES} frames)" in error_text(entry)
