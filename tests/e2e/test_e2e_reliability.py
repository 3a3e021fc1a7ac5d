"""Bad input, Cancel and a soak over the live server's HTTP API.

Every bad case is either refused at ``/prompt`` (HTTP 400 with the message on the node) or fails as
a node error with one actionable message; no file appears in the output or model folders, a pickle
payload never runs, and afterwards the server still answers and runs a good prompt.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from comfy_client import ComfyClient, PromptRejected, error_text, status_messages
from comfy_host import MEMORY_BUDGET_GB, ComfyServer
from helpers import TEST_CLIP

from tav.job_size import estimate_job_bytes
from tests.bad_inputs import (
    evil_pickle,
    files_under,
    png_as_mp4,
    safetensors_with_meta,
    truncated,
    with_nan_payload,
)

#: the unit tests' tiny random model (fast on a loaded CPU); created by the ``rel`` fixture
MODEL = "diffusers/rel-tiny"
#: the conftest's tiny SD1.5-shaped checkpoint and its ControlNet (SD 1.x shapes: they do not fit MODEL)
SD15, SD15_CONTROLNET = "tiny_sd15.safetensors", "tiny_sd15_controlnet.safetensors"
LONG_CLIP = "tav_rel_long.mp4"


# --- prompts ----------------------------------------------------------------------------------


def video_prompt(prefix: str, **load: object) -> dict:
    """Load Video -> Save Video (gif): the cheapest graph that does real work."""
    inputs = {"video": TEST_CLIP, "n_frames": 2, "start": 0, "stride": 1, "width": 64, "height": 64,
              "resize": "stretch", "path": ""}  # fmt: skip
    inputs.update(load)
    return {
        "1": {"class_type": "TAV_LoadVideo", "inputs": inputs},
        "2": {"class_type": "TAV_SaveVideo",
              "inputs": {"images": ["1", 0], "fps": 8.0, "format": "gif", "filename_prefix": prefix}},
    }  # fmt: skip


def sample_prompt(prefix: str, seed: int = 0, **sample: object) -> dict:
    """Load Checkpoint -> Inflate -> Sample from noise (2 frames, 64 px, 2 steps) -> Save Video."""
    inputs = {"pipeline": ["2", 0], "prompt": "a blue circle", "negative_prompt": "", "steps": 2, "cfg": 7.5,
              "eta": 0.0, "seed": seed, "frames": 2, "width": 64, "height": 64}  # fmt: skip
    inputs.update(sample)
    return {
        "1": {"class_type": "TAV_LoadCheckpoint",
              "inputs": {"model": MODEL, "prediction_type": "auto", "precision": "auto"}},
        "2": {"class_type": "TAV_Inflate",
              "inputs": {"pipeline": ["1", 0], "norm": "video", "attention": "sparse_causal", "seed": 0}},
        "3": {"class_type": "TAV_Sample", "inputs": inputs},
        "4": {"class_type": "TAV_SaveVideo",
              "inputs": {"images": ["3", 0], "fps": 8.0, "format": "gif", "filename_prefix": prefix}},
    }  # fmt: skip


def tune_prompt(prefix: str, **tune: object) -> dict:
    """Load Checkpoint -> Inflate -> Load Video -> Tune (1 step) -> Save Tuned."""
    inputs = {"pipeline": ["2", 0], "frames": ["3", 0], "prompt": "a red square", "steps": 1,
              "learning_rate": 1e-4, "seed": 1, "trainable_modules": "attn1.to_q, attn2.to_q, attn_temp",
              "precision": "auto", "gradient_checkpointing": False}  # fmt: skip
    inputs.update(tune)
    p = sample_prompt("unused")
    del p["3"], p["4"]
    p["3"] = video_prompt("unused")["1"]
    p["4"] = {"class_type": "TAV_Tune", "inputs": inputs}
    p["5"] = {"class_type": "TAV_SaveTuned", "inputs": {"pipeline": ["4", 0], "filename_prefix": prefix}}
    return p


def load_tuned_prompt(name: str, prefix: str = "rel_never") -> dict:
    """Load Checkpoint -> Load Tuned(name) -> Save Tuned: fails at Load Tuned for a bad file."""
    return {
        "1": {"class_type": "TAV_LoadCheckpoint",
              "inputs": {"model": MODEL, "prediction_type": "auto", "precision": "auto"}},
        "2": {"class_type": "TAV_LoadTuned",
              "inputs": {"pipeline": ["1", 0], "tuned_weights": name, "check_base_model": True}},
        "3": {"class_type": "TAV_SaveTuned", "inputs": {"pipeline": ["2", 0], "filename_prefix": prefix}},
    }  # fmt: skip


def checkpoint_prompt(model: str) -> dict:
    p = sample_prompt("rel_never")
    p["1"]["inputs"]["model"] = model
    return p


def controlnet_prompt(name: str) -> dict:
    p = sample_prompt("rel_never")
    p["5"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
    p["6"] = {"class_type": "TAV_ControlNet",
              "inputs": {"pipeline": ["2", 0], "control_net": ["5", 0], "image": ["7", 0], "strength": 1.0,
                         "start_percent": 0.0, "end_percent": 1.0}}  # fmt: skip
    p["7"] = video_prompt("x")["1"]
    p["3"]["inputs"]["control"] = ["6", 0]
    return p


def controlnet_hint_prompt(hint_frames: int, frames: int) -> dict:
    """The tiny SD1.5 checkpoint with its own ControlNet (they fit), ``hint_frames`` hints for ``frames`` frames."""
    p = controlnet_prompt(SD15_CONTROLNET)
    p["1"]["inputs"]["model"] = f"checkpoints/{SD15}"
    p["3"]["inputs"]["frames"] = frames
    p["7"]["inputs"]["n_frames"] = hint_frames
    return p


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rel(comfy_server: ComfyServer, client: ComfyClient, controlnet: str, tiny_sd15: str) -> dict[str, object]:
    """Bad files in the server's folders, and one good tuned file of the shapes model to corrupt."""
    from tiny_models import make_clip, make_tiny_diffusers

    make_tiny_diffusers(comfy_server.models / "diffusers" / "rel-tiny")
    make_clip(comfy_server.input / LONG_CLIP, frames=40)
    inp = comfy_server.input / "rel"
    inp.mkdir(exist_ok=True)
    png_as_mp4(inp / "still.mp4")
    (inp / "noise.mp4").write_bytes(os.urandom(20_000))
    (inp / "empty.mp4").write_bytes(b"")
    (inp / "afolder.mp4").mkdir(exist_ok=True)
    _, entry = client.run(tune_prompt("rel/good"), timeout=300)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    tuned_dir = comfy_server.models / "tuneavideo"
    good = sorted((tuned_dir / "rel").glob("good_*.safetensors"))[-1]
    bad = tuned_dir / "relbad"
    bad.mkdir(exist_ok=True)
    safetensors_with_meta(bad / "partial.safetensors", {"a": torch.zeros(2)}, {"format": "tav-tuned/1"})
    truncated(good, bad / "truncated.safetensors", 0.5)
    with_nan_payload(good, bad / "nan.safetensors")
    marker = comfy_server.root / "PWNED"
    evil_pickle(bad / "pickle.safetensors", marker)
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    safetensors_with_meta(bad / "otherbase.safetensors", tensors, {**meta, "base_fingerprint": "0" * 16})
    evil_pickle(comfy_server.models / "checkpoints" / "rel_evil.ckpt", marker)
    evil_pickle(comfy_server.models / "controlnet" / "rel_evil.pth", marker)
    pickled = comfy_server.models / "diffusers" / "rel-pickled"
    if not pickled.exists():
        shutil.copytree(comfy_server.models / "diffusers" / "rel-tiny", pickled)
        (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()
        evil_pickle(pickled / "unet" / "diffusion_pytorch_model.bin", marker)
    yield {"marker": marker}
    shutil.rmtree(bad, ignore_errors=True)
    shutil.rmtree(pickled, ignore_errors=True)
    for f in (
        comfy_server.models / "checkpoints" / "rel_evil.ckpt",
        comfy_server.models / "controlnet" / "rel_evil.pth",
    ):
        f.unlink(missing_ok=True)


def _watched(server: ComfyServer) -> set[str]:
    """Files in every place a prompt could write (output, temp, models/tuneavideo)."""
    out = set()
    for name, root in (("output", server.output), ("temp", server.temp), ("tuned", server.models / "tuneavideo")):
        out |= {f"{name}/{f}" for f in files_under(root)}
    return out


def _good_run(client: ComfyClient) -> None:
    assert client.request("GET", "/system_stats", timeout=10)[0] == 200
    _, entry = client.run(video_prompt(f"rel/ok_{uuid.uuid4().hex[:8]}"), timeout=120)
    assert entry["status"]["status_str"] == "success", error_text(entry)


def _refusal(client: ComfyClient, prompt: dict) -> tuple[str, str]:
    """("rejected" | "error", message) of a prompt that must not succeed."""
    try:
        pid = client.queue(prompt)
    except PromptRejected as e:
        assert e.status == 400, e.body
        errs = [
            f"{x['message']}: {x['details']}" for node in e.body.get("node_errors", {}).values() for x in node["errors"]
        ]
        return "rejected", " | ".join(errs) or str(e.body.get("error"))
    entry = client.wait(pid, timeout=300)
    assert entry["status"]["status_str"] == "error", f"bad prompt reported success: {entry['status']}"
    err = status_messages(entry)["execution_error"]
    return "error", f"{err['node_type']}: {err['exception_message']}"


Make = Callable[[], dict]

# (id, prompt maker, expected regex of the message)
API_CASES: list[tuple[str, Make, str]] = [
    # numbers that ComfyUI's own min/max let through (NaN compares False) or that cannot work
    ("sample-cfg-nan", lambda: sample_prompt("rel_never", cfg=float("nan")), r"cfg must be a finite number"),
    ("sample-cfg-inf", lambda: sample_prompt("rel_never", cfg=float("inf")), r"cfg must be a finite number"),
    ("sample-eta-nan", lambda: sample_prompt("rel_never", eta=float("nan")), r"eta must be a finite number"),
    ("sample-eta-two", lambda: sample_prompt("rel_never", eta=2.0), r"eta must be at most 1"),
    ("sample-width-huge", lambda: sample_prompt("rel_never", width=8192), r"width must be at most 4096"),
    ("sample-job-too-big", lambda: sample_prompt("rel_never", frames=1024, width=4096, height=4096),
     r"needs at least about .* GiB.*would fit"),
    ("tune-lr-nan", lambda: tune_prompt("rel_never", learning_rate=float("nan")), r"learning_rate must be a finite"),
    ("save-fps-nan", lambda: {**video_prompt("rel_never"), "2": {**video_prompt("rel_never")["2"], "inputs": {
        **video_prompt("rel_never")["2"]["inputs"], "fps": float("nan")}}}, r"fps must be a finite number"),
    ("save-fps-zero", lambda: {**video_prompt("rel_never"), "2": {**video_prompt("rel_never")["2"], "inputs": {
        **video_prompt("rel_never")["2"]["inputs"], "fps": 0.0}}}, r"fps must be at least 0\.1"),
    ("load-widget-max", lambda: video_prompt("rel_never", n_frames=1024, width=4096, height=4096),
     r"1024 frames at 4096x4096, load.*would fit: at 4096x4096 up to \d+ frame"),
    ("load-frames-zero", lambda: video_prompt("rel_never", n_frames=0), r"n_frames must be at least 1"),
    # videos
    ("video-still-png", lambda: video_prompt("rel_never", video="rel/still.mp4"), r"single frame: it is a still image"),
    ("video-noise", lambda: video_prompt("rel_never", video="rel/noise.mp4"), r"cannot read .*noise\.mp4.* as a video"),
    ("video-empty", lambda: video_prompt("rel_never", video="rel/empty.mp4"), r"empty\.mp4.* is empty \(0 bytes\)"),
    ("video-folder", lambda: video_prompt("rel_never", path="rel/afolder.mp4"), r"'rel/afolder\.mp4' is not a video file inside"),
    ("video-stride-past-end", lambda: video_prompt("rel_never", stride=50), r"reach only 1 frame of the 8 .*stride 7 or less"),
    ("video-start-past-end", lambda: video_prompt("rel_never", start=100), r"clip has 8 frames; start=100 leaves none"),
    ("video-path-escape", lambda: video_prompt("rel_never", path="../../../etc/hostname"), r"is not a video file inside ComfyUI's input"),
    ("save-prefix-escape", lambda: video_prompt("../../rel_escape"), r"outside the output folder"),
    # tuned weights in models/tuneavideo
    ("tuned-partial-meta", lambda: load_tuned_prompt("relbad/partial.safetensors"), r"lacks the metadata base_fingerprint"),
    ("tuned-truncated", lambda: load_tuned_prompt("relbad/truncated.safetensors"), r"truncated\.safetensors.* not a readable \.safetensors"),
    ("tuned-nan", lambda: load_tuned_prompt("relbad/nan.safetensors"), r"nan\.safetensors.* holds NaN values; the file is corrupted"),
    ("tuned-pickle", lambda: load_tuned_prompt("relbad/pickle.safetensors"), r"pickle\.safetensors.* not a readable \.safetensors"),
    ("tuned-other-base", lambda: load_tuned_prompt("relbad/otherbase.safetensors"), r"made for another base model"),
    ("save-tuned-prefix-escape", lambda: tune_prompt("../../../rel_escape"), r"outside the output folder"),
    # checkpoints and ControlNets that hide a pickle payload
    ("checkpoint-ckpt-pickle", lambda: checkpoint_prompt("checkpoints/rel_evil.ckpt"), r"refused to load .*rel_evil\.ckpt"),
    ("diffusers-bin-pickle", lambda: checkpoint_prompt("diffusers/rel-pickled"), r"refused to load .*unet/diffusion_pytorch_model\.bin"),
    ("controlnet-pickle", lambda: controlnet_prompt("rel_evil.pth"), r"(?i)weights_only|unpickl|unsupported global"),
    ("controlnet-other-base", lambda: controlnet_prompt(SD15_CONTROLNET),
     r"^TAV_ControlNet: this ControlNet was made for SD 1\.x \(768-wide text embeddings, 320 channels in its first "
     r"block\), but the pipeline's base model is another base \(32-wide text embeddings, 32 channels"),
    ("controlnet-hint-frames", lambda: controlnet_hint_prompt(2, 4),
     r"^TAV_Sample: the ControlNet hint has 2 frame\(s\) but the video has 4: give one hint image per frame"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "expect"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_refuses(client: ComfyClient, comfy_server: ComfyServer, rel: dict, make: Make, expect: str) -> None:
    before = _watched(comfy_server)
    kind, message = _refusal(client, make())
    assert re.search(expect, message), f"{kind}: {message!r} does not match {expect!r}"
    assert "Traceback" not in message and 'File "' not in message, message
    assert _watched(comfy_server) == before, "a file was written or left behind"
    assert not Path(rel["marker"]).exists(), "a pickle payload ran"
    _good_run(client)


def test_api_case_count() -> None:
    assert len(API_CASES) >= 25


def _ui_text(entry: dict, node: str) -> str:
    return " ".join(entry["outputs"].get(node, {}).get("text", []))


def test_approximate_requests_warn_in_the_node_ui(client: ComfyClient, rel: dict) -> None:
    _, entry = client.run(video_prompt(f"rel/short_{uuid.uuid4().hex[:6]}", n_frames=20), timeout=120)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    assert re.search(r"warning: asked for 20 frames but .* has 8", _ui_text(entry, "1")), entry["outputs"]
    long_prompt = "a blue circle on a white background " * 12 + "LAST_WORDS"
    _, entry = client.run(sample_prompt(f"rel/long_{uuid.uuid4().hex[:6]}", prompt=long_prompt), timeout=120)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    assert re.search(r"warning: prompt is \d+ tokens .*ignored the end .*last.*words", _ui_text(entry, "3")), entry


# --- Cancel ------------------------------------------------------------------------------------


def _largest_accepted_frames(width: int, height: int) -> int:
    budget = MEMORY_BUDGET_GB * 2**30
    n = 1
    while estimate_job_bytes(n + 1, height, width, kind="load") <= budget:
        n += 1
    return n


def test_cancel_the_largest_load_video_job(client: ComfyClient, comfy_server: ComfyServer, rel: dict) -> None:
    """The widgets' maximum is refused up front; the largest accepted job stops within seconds of /interrupt."""
    t0 = time.monotonic()
    kind, message = _refusal(client, video_prompt("rel_never", n_frames=1024, width=4096, height=4096))
    assert kind == "rejected" and "would fit" in message and time.monotonic() - t0 < 30, message
    frames = _largest_accepted_frames(4096, 4096)
    assert frames >= 2
    prompt = video_prompt(f"rel/cancel_{uuid.uuid4().hex[:6]}", video=LONG_CLIP, n_frames=frames, width=4096,
                          height=4096)  # fmt: skip
    prompt["2"]["inputs"]["format"] = "mp4"
    pid = client.queue(prompt)
    client.wait_for(
        lambda m: m["type"] == "progress" and m["data"].get("prompt_id") == pid and m["data"]["node"] == "1",
        timeout=120,
    )
    sent = time.monotonic()
    assert client.request("POST", "/interrupt", {})[0] == 200
    client.wait_for(
        lambda m: (
            m["type"] in ("execution_interrupted", "execution_success", "execution_error")
            and m["data"].get("prompt_id") == pid
        ),
        timeout=120,
    )
    latency = time.monotonic() - sent
    entry = client.wait(pid, timeout=60)
    assert "execution_interrupted" in status_messages(entry), entry["status"]
    print(f"\ncancel: {frames} frames at 4096x4096, execution_interrupted {latency:.2f} s after /interrupt")
    assert latency < 10, latency
    _good_run(client)


# --- soak --------------------------------------------------------------------------------------


def _rss(server: ComfyServer) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_soak_alternating_bad_and_good(client: ComfyClient, comfy_server: ComfyServer, rel: dict) -> None:
    bad: list[Make] = [
        lambda: sample_prompt("rel_never", cfg=float("nan")),
        lambda: load_tuned_prompt("relbad/nan.safetensors"),
        lambda: video_prompt("rel_never", video="rel/still.mp4"),
        lambda: checkpoint_prompt("checkpoints/rel_evil.ckpt"),
        lambda: sample_prompt("rel_never", frames=1024, width=4096, height=4096),
    ]
    rss_first = None
    for i in range(20):
        _refusal(client, bad[i % len(bad)]())
        # good ones alternate a full sampling run (new seed) and a video load/save
        good = sample_prompt(f"rel/soak_{i:02d}", seed=1000 + i) if i % 2 == 0 else video_prompt(f"rel/soak_{i:02d}")
        _, entry = client.run(good, timeout=120)
        assert entry["status"]["status_str"] == "success", error_text(entry)
        if rss_first is None:
            rss_first = _rss(comfy_server)
    rss_last = _rss(comfy_server)
    print(
        f"\nsoak: RSS after first good prompt {rss_first / 2**20:.0f} MiB, after 40 prompts {rss_last / 2**20:.0f} MiB"
    )
    assert rss_last <= 1.2 * rss_first, (rss_first, rss_last)
    assert not Path(rel["marker"]).exists()


def test_out_of_memory_during_tune_is_a_clear_error_and_the_next_prompt_runs(
    client: ComfyClient, comfy_server: ComfyServer, rel: dict
) -> None:
    """A GPU that runs out mid-tuning (injected: the server's next AdamW step raises CUDA's error)."""
    seed = uuid.uuid4().int % 2**31  # not a cached Tune: it must run
    comfy_server.oom_flag.write_text("")
    kind, message = _refusal(client, tune_prompt(f"rel/oom_{seed}", seed=seed))
    assert not comfy_server.oom_flag.exists(), "the injected fault did not fire"
    assert kind == "error"
    assert re.search(
        r"^TAV_Tune: tune ran out of device memory \(CUDA out of memory.*\); everything it held is released: "
        r"lower the frame count or the size, keep gradient checkpointing on",
        message,
    ), message
    _, entry = client.run(tune_prompt(f"rel/after_oom_{seed}", seed=seed), timeout=300)  # the same job now runs
    assert entry["status"]["status_str"] == "success", error_text(entry)
