"""Long clips on the native path: TAV_ContextWindows, ComfyUI's context windows over the tuned MODEL.

In-process (``native_windows_inprocess.py`` in a subprocess, against the host's ComfyUI, on the
tiny SD1.5-shaped checkpoint and ControlNet): one window as long as the clip against no windows,
native windows against ``tav``'s with and without the frame-0 anchor, the hint frames each window's
ControlNet receives, the host's causal_window_fix, ComfyUI's own handler (the bugs the node works
around), bad settings.
Over /prompt: the shipped long-clip workflow, shrunk for the CPU, against TAV_Sample with the same
windows from the same inverted noise; bad settings as node errors. Figures are max |diff| / max |ref|.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from comfy_client import ComfyClient, error_text
from comfy_host import COMFY_DIR, PYTHON, ComfyServer
from helpers import SIGMA0, TEST_CLIP, latent, load_api, node_of, nodes_of, rel, saved_files, set_inputs

from tav.video_io import read_video

#: windows of 4 overlapping by 1 over 8 frames: [0, 4), [3, 7), [4, 8); 32 px frames (4x4 latents)
WINDOW, OVERLAP, FRAMES, STEPS, SIZE = 4, 1, 8, 2, 32


@pytest.fixture(scope="module")
def measured(
    comfy_server: ComfyServer, tiny_sd15: str, controlnet: str, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    models = comfy_server.models
    cmd = [PYTHON, str(Path(__file__).with_name("native_windows_inprocess.py"))]
    cmd += [str(models / "checkpoints" / tiny_sd15), str(models / "controlnet" / controlnet)]
    cmd += ["--comfy-dir", str(COMFY_DIR), "--tmp", str(tmp_path_factory.mktemp("native_windows"))]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads([x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT ") :])
    print("native windows in-process:", json.dumps({k: v for k, v in result.items() if "records" not in k}, indent=1))
    return result


def test_one_window_as_long_as_the_clip_is_no_windows(measured: dict) -> None:
    """The whole windowed path runs (set_step, slicing, fusion, anchor recording) and changes nothing."""
    assert measured["one_window"]["bit_identical"], measured["one_window"]


def test_native_windows_match_tav_windows(measured: dict) -> None:
    """Windows of 3, overlap 1, over 7 frames, 3 DDIM steps at CFG 7.5: native == tav.ddim.sample(windows=)."""
    floor = measured["floor_unwindowed_native_vs_tav"]
    for variant, err in measured["native_vs_tav"].items():
        print(f"native vs tav windows ({variant}): {err:.2e} (one pass: {floor:.2e})")
        assert err <= 1e-4, variant
    # negative controls: the anchor, the windows and the fusion each change the result, so the match can fail
    assert measured["anchor_moves"] > 1e-3
    assert measured["self_keys_move"] > 1e-3
    assert measured["windows_move"] > 1e-2
    assert measured["flat_vs_tav_linear"] > 1e-4


def test_each_window_controlnet_sees_its_own_hint_frames(measured: dict) -> None:
    """Hint frame k is filled with (k+1)/8, so the hint ControlNet receives names its frames."""
    records = measured["control_records"]
    assert {tuple(r["index_list"]) for r in records} == {(0, 1, 2), (2, 3, 4), (4, 5, 6)}
    assert len(records) == 3 * 3  # 3 steps x 3 windows, cond and uncond batched together
    for r in records:
        assert r["hint_frames"] == r["index_list"] * 2, r  # cond + uncond
        assert r["model_frames"] == len(r["index_list"]), r  # the TAV patches' frame count is the window's
    for r in measured["control_records_one_window"]:
        assert r["hint_frames"] == list(range(7)) * 2 and r["model_frames"] == 7, r


def test_host_causal_window_fix_is_off_for_tav_windows(measured: dict) -> None:
    """Hosts with ``causal_window_fix`` (on by default) prepend the preceding frame to each window; left on,
    native windows are no longer tav's (so the shim turning it off is needed, and the match above can fail)."""
    if measured["host_has_causal_window_fix"]:
        assert measured["causal_window_fix_vs_tav"] > 1e-3, measured["causal_window_fix_vs_tav"]
    else:
        assert "causal_window_fix_vs_tav" not in measured


def test_comfyui_handler_has_the_bugs_worked_around(measured: dict) -> None:
    """ComfyUI's own handler on the same MODEL. set_step: where the probe finds the old set_step, sampling
    with frames in the batch fails on it; where the probe finds it fixed, stock sampling runs. Either way,
    once it runs, every window's ControlNet sees hint frames 0..2 (why the node subclasses it)."""
    if measured["stock_set_step_takes_frame_batch"]:
        assert measured["stock_error"] == "", measured["stock_error"]
    else:
        assert "must match the size" in measured["stock_error"], measured["stock_error"]
    stale = [r for r in measured["stock_control_records"] if r["hint_frames"][:3] != r["index_list"]]
    assert stale and all(r["hint_frames"][:3] == [0, 1, 2] for r in stale), measured["stock_control_records"]


def test_bad_settings_are_clear_errors(measured: dict) -> None:
    errors = measured["errors"]
    assert errors["3/3"] == errors["4/5"].replace("(4), got 5", "(3), got 3")
    assert "smaller than the window (3), got 3" in errors["3/3"]
    assert "window must be at least 2 frames" in errors["1/0"]
    assert "window (8 frames) is longer than the clip (7 frames)" in errors["longer_than_clip"]
    assert "Tune-A-Video → MODEL" in errors["not_tuned"]
    assert measured["input_untouched"]


# --- over /prompt: the shipped workflow -------------------------------------------------------


@pytest.fixture(scope="module")
def long_native(tiny_sd15: str) -> dict:
    """tav_native_long_clip on the tiny checkpoint: tune on 4 frames (stride 2), edit 8 in windows of 4;
    plus TAV_Sample with the same windows from the same inverted noise, both latents saved."""
    p = copy.deepcopy(load_api("tav_native_long_clip"))
    tune, edit = sorted(nodes_of(p, "TAV_LoadVideo"), key=lambda k: p[k]["inputs"]["n_frames"])
    common = {"video": TEST_CLIP, "width": SIZE, "height": SIZE}
    p[tune]["inputs"].update(common, n_frames=WINDOW, stride=2)
    p[edit]["inputs"].update(common, n_frames=FRAMES, stride=1)
    set_inputs(p, "CheckpointLoaderSimple", ckpt_name=tiny_sd15)
    set_inputs(p, "TAV_Tune", steps=1, gradient_checkpointing=False)
    set_inputs(p, "TAV_DDIMInvert", steps=STEPS, window=WINDOW, overlap=OVERLAP)
    set_inputs(p, "TAV_DDIMSigmas", steps=STEPS)
    set_inputs(p, "TAV_ContextWindows", window=WINDOW, overlap=OVERLAP)
    guider = p[node_of(p, "CFGGuider")]["inputs"]
    p["90"] = {
        "class_type": "TAV_Sample",
        "inputs": {
            "pipeline": [node_of(p, "TAV_Tune"), 0], "prompt": "", "negative_prompt": "", "steps": STEPS,
            "cfg": guider["cfg"], "eta": 0.0, "seed": 0, "frames": FRAMES, "width": SIZE, "height": SIZE,
            "inverted": [node_of(p, "TAV_DDIMInvert"), 0], "positive": guider["positive"],
            "negative": guider["negative"], "window": WINDOW, "overlap": OVERLAP, "anchor_first_frame": True,
        },
    }  # fmt: skip
    p["91"] = {"class_type": "SaveLatent", "inputs": {"samples": ["90", 1], "filename_prefix": "native_long/tav"}}
    stock = [node_of(p, "SamplerCustomAdvanced"), 0]
    p["92"] = {"class_type": "SaveLatent", "inputs": {"samples": stock, "filename_prefix": "native_long/stock"}}
    return p


def test_long_clip_workflow_matches_the_pipeline_path(
    client: ComfyClient, comfy_server: ComfyServer, long_native: dict
) -> None:
    _, entry = client.run(long_native, timeout=600)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    record = saved_files(entry, node_of(long_native, "TAV_SaveVideo"))[0]
    clip = read_video(
        comfy_server.output / record["subfolder"] / record["filename"], n_frames=0, stride=1, resize="none"
    )
    assert clip.frames.shape == (FRAMES, SIZE, SIZE, 3)
    stock, ours = latent(comfy_server, entry, "92"), latent(comfy_server, entry, "91")
    assert stock.shape == ours.shape == (FRAMES, 4, SIZE // 8, SIZE // 8)
    err = rel(stock / (1 + SIGMA0**2) ** 0.5, ours)
    print(f"native context windows vs TAV_Sample windows over the queue: {err:.2e}")
    assert err <= 1e-4


def test_impossible_windows_are_node_errors(client: ComfyClient, long_native: dict) -> None:
    p = copy.deepcopy(long_native)
    node = node_of(p, "TAV_ContextWindows")
    p[node]["inputs"]["overlap"] = WINDOW
    status, body = client.request("POST", "/prompt", {"prompt": p, "client_id": client.client_id})
    assert status in (200, 400), body  # other valid outputs may still run
    assert "smaller than the window" in str(body["node_errors"][node]), body
    if status == 200:
        entry = client.wait(body["prompt_id"], timeout=600)
        assert node_of(p, "TAV_SaveVideo") not in entry["outputs"]


def test_window_longer_than_the_clip_is_a_clear_error(client: ComfyClient, long_native: dict) -> None:
    p = copy.deepcopy(long_native)
    p[node_of(p, "TAV_ContextWindows")]["inputs"]["window"] = FRAMES + 4
    _, entry = client.run(p, timeout=600)
    assert entry["status"]["status_str"] == "error"
    assert f"window ({FRAMES + 4} frames) is longer than the clip ({FRAMES} frames)" in error_text(entry)
