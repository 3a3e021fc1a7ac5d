"""The shapes workflow end to end over the HTTP queue: outputs, progress, caching, errors, cancel."""

from __future__ import annotations

import copy
import re

import pytest
from comfy_client import ComfyClient, PromptRejected, error_text, status_messages
from comfy_host import ComfyServer
from helpers import TEST_CLIP, load_api, make_small, node_of, saved_files

from tav.video_io import read_video

FRAMES, SIZE = 2, 64


@pytest.fixture(scope="module")
def shapes_prompt() -> dict:
    return make_small(load_api("tav_shapes_edit"), frames=FRAMES, size=SIZE, steps=2, tune_steps=2)


@pytest.fixture(scope="module")
def first_run(client: ComfyClient, shapes_prompt: dict) -> tuple[str, dict]:
    pid, entry = client.run(shapes_prompt, timeout=300)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    return pid, entry


def _video_check(server: ComfyServer, record: dict, frames: int, size: int) -> None:
    path = server.output / record["subfolder"] / record["filename"]
    assert path.is_file(), path
    clip = read_video(path, n_frames=0, stride=1, resize="none")
    assert clip.frames.shape == (frames, size, size, 3), clip.frames.shape


def test_shapes_workflow_runs(comfy_server: ComfyServer, shapes_prompt: dict, first_run: tuple[str, dict]) -> None:
    _, entry = first_run
    save = node_of(shapes_prompt, "TAV_SaveVideo")
    records = saved_files(entry, save)
    assert len(records) == 1 and records[0]["filename"].endswith(".mp4"), entry["outputs"]
    _video_check(comfy_server, records[0], FRAMES, SIZE)
    tuned = list((comfy_server.models / "tuneavideo").glob("tav_shapes_*.safetensors"))
    assert tuned, "Save Tuned wrote nothing into models/tuneavideo"
    loss = saved_files(entry, node_of(shapes_prompt, "PreviewImage"))
    assert loss and loss[0]["type"] == "temp"
    # loading a model through the pack adds no third-party noise to the server log (diffusers' accelerate
    # advice, transformers' weight-loading bar); stock samplers' own progress bars are ComfyUI's business
    log = comfy_server.log.read_text(errors="replace")
    ours = log[log.index("got prompt") :].splitlines()
    noise = [ln for ln in ours if "accelerate" in ln or "Loading weights" in ln]
    assert not noise, noise


def test_progress_on_websocket(client: ComfyClient, shapes_prompt: dict, first_run: tuple[str, dict]) -> None:
    pid, _ = first_run
    progress_nodes = {m["data"]["node"] for m in client.events(pid, "progress")}
    for cls in ("TAV_Tune", "TAV_DDIMInvert", "TAV_Sample"):
        assert node_of(shapes_prompt, cls) in progress_nodes, f"no progress from {cls}: {progress_nodes}"
    steps = [
        m["data"] for m in client.events(pid, "progress") if m["data"]["node"] == node_of(shapes_prompt, "TAV_Sample")
    ]
    assert steps[-1]["value"] == steps[-1]["max"] == 2
    assert client.events(pid, "execution_success")


def test_changing_edit_prompt_reruns_sampling_only(
    client: ComfyClient, comfy_server: ComfyServer, shapes_prompt: dict, first_run: tuple[str, dict]
) -> None:
    p = copy.deepcopy(shapes_prompt)
    sample, save = node_of(p, "TAV_Sample"), node_of(p, "TAV_SaveVideo")
    p[sample]["inputs"]["prompt"] = "a green triangle on a white background"
    pid, entry = client.run(p, timeout=300)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    cached = set(status_messages(entry)["execution_cached"]["nodes"])
    ran = {m["data"]["node"] for m in client.events(pid, "executing") if m["data"]["node"] is not None}
    for cls in ("TAV_LoadCheckpoint", "TAV_Inflate", "TAV_LoadVideo", "TAV_Tune", "TAV_DDIMInvert", "TAV_SaveTuned"):
        assert node_of(p, cls) in cached, f"{cls} re-ran; cached={cached}"
    assert ran == {sample, save}, ran
    _video_check(comfy_server, saved_files(entry, save)[0], FRAMES, SIZE)


def _small_valid_prompt(prefix: str) -> dict:
    return {
        "1": {
            "class_type": "TAV_LoadVideo",
            "inputs": {"video": TEST_CLIP, "n_frames": 2, "start": 0, "stride": 1, "width": 64, "height": 64,
                       "resize": "stretch", "path": ""},
        },
        "2": {"class_type": "TAV_SaveVideo",
              "inputs": {"images": ["1", 0], "fps": ["1", 2], "format": "gif", "filename_prefix": prefix}},
    }  # fmt: skip


@pytest.mark.parametrize(
    "change, pattern",
    [
        # a name not in the list: the host's list check (V3 combos, ComfyUI ~0.33 on) or the node, before opening it
        ({"video": "no_such_clip.mp4"}, r"(?=.*no_such_clip\.mp4)(?=.*(Value not in list|is not a video file inside))"),
        ({"n_frames": 0}, r"n_frames.*at least 1"),
        ({"width": 60}, r"width.*multiple of 8"),
        ({"path": "../../etc/passwd"}, r"'\.\./\.\./etc/passwd' is not a video file inside ComfyUI's input"),
    ],
)
def test_bad_input_is_rejected_readably(client: ComfyClient, change: dict, pattern: str) -> None:
    p = _small_valid_prompt("bad")
    p["1"]["inputs"].update(change)
    try:
        pid = client.queue(p)
    except PromptRejected as err:
        assert err.status == 400
        assert err.body["error"]["type"] == "prompt_outputs_failed_validation"
        details = " ".join(f"{e['message']}: {e['details']}" for e in err.body["node_errors"]["1"]["errors"])
    else:
        entry = client.wait(pid, timeout=120)
        error = status_messages(entry)["execution_error"]
        assert error["node_id"] == "1", error
        details = f"{change} {error['exception_message']}"
    assert re.search(pattern, details), details
    # the server keeps serving
    pid, entry = client.run(_small_valid_prompt("after_bad"), timeout=120)
    assert entry["status"]["status_str"] == "success", error_text(entry)


def test_bad_sample_size_is_rejected(client: ComfyClient, shapes_prompt: dict) -> None:
    p = copy.deepcopy(shapes_prompt)
    sample = node_of(p, "TAV_Sample")
    p[sample]["inputs"]["height"] = 100
    status, body = client.request("POST", "/prompt", {"prompt": p, "client_id": client.client_id})
    # ComfyUI still runs the other, valid outputs of the graph (the loss preview, Save Tuned)
    assert status in (200, 400), body
    assert "multiple of 8" in str(body["node_errors"][sample]), body
    if status == 200:
        entry = client.wait(body["prompt_id"], timeout=300)
        assert sample not in entry["outputs"]


def test_interrupt_during_tuning(client: ComfyClient, shapes_prompt: dict, first_run: tuple[str, dict]) -> None:
    p = copy.deepcopy(shapes_prompt)
    tune = node_of(p, "TAV_Tune")
    p[tune]["inputs"]["steps"] = 100000
    pid = client.queue(p)
    client.wait_for(
        lambda m: m["type"] == "progress" and m["data"].get("prompt_id") == pid and m["data"]["node"] == tune,
        timeout=120,
    )
    status, _ = client.request("POST", "/interrupt", {})
    assert status == 200
    entry = client.wait(pid, timeout=60)
    msgs = status_messages(entry)
    assert "execution_interrupted" in msgs, entry["status"]
    assert msgs["execution_interrupted"]["node_id"] == tune
    assert client.events(pid, "execution_interrupted")
    pid2, entry2 = client.run(_small_valid_prompt("after_interrupt"), timeout=120)
    assert entry2["status"]["status_str"] == "success", error_text(entry2)
