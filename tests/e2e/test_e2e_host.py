"""The pack loads on the live host and every node is registered with its inputs."""

from __future__ import annotations

from comfy_client import ComfyClient, status_messages
from comfy_host import PACK_LINK, ComfyServer
from helpers import API_DIR, UI_DIR, combo_options

EXPECTED = {
    "TAV_LoadVideo": {
        "video", "n_frames", "start", "stride", "width", "height", "resize", "images", "path", "source_video",
    },
    "TAV_LoadCheckpoint": {"model", "prediction_type", "precision"},
    "TAV_FromComfyModels": {"model", "clip", "vae", "precision"},
    "TAV_Inflate": {"pipeline", "norm", "attention", "seed"},
    "TAV_Tune": {
        "pipeline", "frames", "prompt", "steps", "learning_rate", "seed", "trainable_modules", "precision",
        "gradient_checkpointing",
    },
    "TAV_SaveTuned": {"pipeline", "filename_prefix"},
    "TAV_LoadTuned": {"pipeline", "tuned_weights", "check_base_model"},
    "TAV_DDIMInvert": {"pipeline", "frames", "steps", "prompt", "window", "overlap", "anchor_first_frame"},
    "TAV_Sample": {
        "pipeline", "prompt", "negative_prompt", "steps", "cfg", "eta", "seed", "frames", "width", "height",
        "inverted", "positive", "negative", "control", "window", "overlap", "anchor_first_frame",
    },
    "TAV_ControlNet": {"pipeline", "control_net", "image", "strength", "start_percent", "end_percent"},
    "TAV_SaveVideo": {"images", "fps", "format", "filename_prefix"},
    "TAV_ApplyToModel": {"model", "tuned_weights", "check_base_model", "pipeline"},
    "TAV_InvertedToLatent": {"inverted", "model"},
    "TAV_DDIMSigmas": {"model", "steps"},
    "TAV_ContextWindows": {"model", "window", "overlap", "anchor_first_frame", "fuse_method"},
    "TAV_ScoreEdit": {"edited", "prompt", "clip_model", "batch_size", "source", "clip_vision"},
}  # fmt: skip


def test_pack_imports_without_failure(client: ComfyClient, comfy_server: ComfyServer) -> None:
    client.get("/object_info/TAV_LoadVideo")  # server is up and the pack has loaded
    log = comfy_server.log.read_text(errors="replace")
    bad = [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_LINK in line]
    assert not bad, "\n".join(bad)
    assert PACK_LINK in log  # listed in the custom-node import times


def test_object_info_lists_every_node(client: ComfyClient) -> None:
    info = client.object_info()
    for node, inputs in EXPECTED.items():
        assert node in info, f"{node} not registered"
        spec = info[node]
        got = set(spec["input"].get("required", {})) | set(spec["input"].get("optional", {}))
        assert got == inputs, f"{node}: inputs {sorted(got)} != {sorted(inputs)}"
        assert spec["category"].startswith("Tune-A-Video"), spec["category"]
        assert PACK_LINK in spec["python_module"]
        for section in ("required", "optional"):
            for name, decl in spec["input"].get(section, {}).items():
                assert len(decl) > 1 and decl[1].get("tooltip"), f"{node}.{name} has no tooltip"
    assert set(info["TAV_Sample"]["output"]) == {"IMAGE", "LATENT"}
    assert info["TAV_LoadVideo"]["input"]["required"]["video"][1].get("video_upload") is True
    assert "diffusers/tav-shapes" in combo_options(info["TAV_LoadCheckpoint"]["input"]["required"]["model"])
    assert info["TAV_LoadVideo"]["output"] == ["IMAGE", "INT", "FLOAT", "VIDEO"]
    assert info["TAV_LoadVideo"]["output_name"] == ["frames", "frame_count", "fps", "clip"]
    assert info["TAV_Tune"]["output_name"] == ["tuned_pipeline", "loss_curve"]
    assert info["TAV_SaveVideo"]["output_node"] is True
    assert info["TAV_ApplyToModel"]["output"] == ["MODEL"]
    assert info["TAV_InvertedToLatent"]["output"] == ["LATENT"]
    assert info["TAV_DDIMSigmas"]["output"] == ["SIGMAS"]
    assert info["TAV_ContextWindows"]["output"] == ["MODEL"]


def test_tuneavideo_folder_registered(client: ComfyClient, comfy_server: ComfyServer) -> None:
    assert "tuneavideo" in client.get("/models")
    (comfy_server.models / "tuneavideo" / "probe_tuned.safetensors").write_bytes(b"")
    assert "probe_tuned.safetensors" in client.get("/models/tuneavideo")
    (comfy_server.models / "tuneavideo" / "probe_tuned.safetensors").unlink()


def test_workflows_listed_in_template_browser(client: ComfyClient) -> None:
    templates = client.get("/workflow_templates")
    assert PACK_LINK in templates, templates
    ui = sorted(p.stem for p in UI_DIR.glob("*.json"))
    assert sorted(templates[PACK_LINK]) == ui
    assert sorted(p.stem for p in API_DIR.glob("*.json")) == ui  # every UI workflow has an API twin
    status, body = client.request("GET", f"/api/workflow_templates/{PACK_LINK}/{ui[0]}.json")
    assert status == 200 and body["version"] == 0.4


def test_ui_workflows_in_sync_with_api_twins() -> None:
    """The drag-and-drop files are generated from the API twins and the node definitions of the CI host
    (0.3.75, ``.venv/comfyui``), whichever host is under test: newer hosts add slots to stock nodes (0.33's
    Preview Image has an IMAGE output) that their frontend fills in on load (test_e2e_browser.py checks that
    the files load on the host under test). See docs/compatibility.md."""
    import subprocess
    import sys

    from comfy_host import REPO

    ci_host = REPO / ".venv" / "comfyui"
    assert (ci_host / "main.py").is_file(), f"no CI host at {ci_host}: run scripts/setup_comfy_host.sh"
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_workflows.py"), "--check", "--comfy-dir", str(ci_host)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


def test_bundled_example_clips_load(client: ComfyClient) -> None:
    """The paper's clips ship with the pack: Load Video lists them and every workflow's clip is one of them."""
    import json

    choices = combo_options(client.object_info()["TAV_LoadVideo"]["input"]["required"]["video"])
    examples = {c for c in choices if c.startswith("tav-examples/")}
    assert examples == {f"tav-examples/{n}.mp4" for n in ("car-turn", "man-skiing", "man-surfing", "rabbit-watermelon")}
    used = set()
    for path in API_DIR.glob("*.json"):
        for node in json.loads(path.read_text()).values():
            if node["class_type"] == "TAV_LoadVideo":
                used.add(node["inputs"]["video"])
    own_clips = {"tav_shapes_red_square.mp4", "tav_shapes_long_clip.mp4"}  # written by the test fixtures
    assert used - own_clips <= examples and used & examples, used

    prompt = {
        "1": {
            "class_type": "TAV_LoadVideo",
            "inputs": {
                "video": "tav-examples/car-turn.mp4", "n_frames": 2, "start": 0, "stride": 1, "width": 64,
                "height": 64, "resize": "stretch", "path": "",
            },
        },
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }  # fmt: skip
    _pid, entry = client.run(prompt, timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert len(entry["outputs"]["2"]["images"]) == 2
    # only the listed names resolve: a crafted name is refused, by the host's list check (V3 combos, ~0.33 on)
    # or by the node before it opens anything
    prompt["1"]["inputs"]["video"] = "tav-examples/../../../etc/passwd"
    status, body = client.request("POST", "/prompt", {"prompt": prompt, "client_id": client.client_id})
    if status == 200:
        entry = client.wait(body["prompt_id"], timeout=60)
        err = status_messages(entry)["execution_error"]
        assert err["node_id"] == "1" and "is not a video file inside" in err["exception_message"], err
    else:
        assert status == 400 and "1" in body["node_errors"], body
