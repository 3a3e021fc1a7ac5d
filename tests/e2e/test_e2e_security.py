"""Every file a prompt names resolves inside ComfyUI's folders (after symlinks) or is refused, the same way
whether or not the path exists.

Each file-taking input of the pack (Load Video's ``video`` and ``path``, Load Checkpoint's ``model``,
Load Tuned's and Apply To Model's ``tuned_weights``, and the save nodes' ``filename_prefix``) is tried
with traversal, an absolute path, a symlink that leads out, a dangling symlink, special files
(/dev/zero, a fifo, a directory) and the oracle check: an existing and a missing path outside must get
the same answer. Every outside target is a file that WOULD load (a real clip, real tuned weights, a real
checkpoint), so a leak shows up as a success. Over the HTTP API against the live server, and once more on
the node code itself (in-process), below ComfyUI's own list validation, which a host may drop or a race
may pass.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import pytest
from comfy_client import ComfyClient, PromptRejected, error_text, status_messages
from comfy_host import COMFY_DIR, PYTHON, ComfyServer
from helpers import TEST_CLIP, combo_options
from test_e2e_reliability import MODEL, load_tuned_prompt, tune_prompt, video_prompt

from tests.bad_inputs import files_under

SEC = "sec"  # sub-folder of input/ and models/*/ with this module's files
#: the answers: the host's value-in-list check at /prompt (for V3 combos from ComfyUI ~0.33 on), or the node's own
LISTED = r"Value not in list"
NOT_A_VIDEO = r"is not a video file inside ComfyUI's input, output or temp folder"
NOT_TUNED = r"is not a file in models/tuneavideo"
NOT_A_MODEL = r"is not a pipeline folder in models/diffusers or a file in models/checkpoints"


@pytest.fixture(scope="module")
def sec(comfy_server: ComfyServer, client: ComfyClient, tiny_sd15: str) -> Iterator[dict[str, object]]:
    """Loadable files outside ComfyUI's folders, links to them from inside, special files, and
    inside-only links (which must keep working)."""
    from tiny_models import make_clip, make_tiny_diffusers

    s = comfy_server
    out = s.root / "outside"
    out.mkdir(exist_ok=True)
    make_tiny_diffusers(s.models / "diffusers" / "rel-tiny")
    make_clip(out / "outside.mp4")
    _, entry = client.run(tune_prompt(f"{SEC}/good"), timeout=300)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    good_tuned = sorted((s.models / "tuneavideo" / SEC).glob("good_*.safetensors"))[-1]
    shutil.copy(good_tuned, out / "outside.safetensors")
    # a hard link, not a copy: the same 900 MB file under a second path outside ComfyUI's folders
    (out / "outside_ckpt.safetensors").unlink(missing_ok=True)
    os.link(s.models / "checkpoints" / tiny_sd15, out / "outside_ckpt.safetensors")
    shutil.copytree(s.models / "diffusers" / "rel-tiny", out / "outside-pipe", dirs_exist_ok=True)
    (out / "writes").mkdir(exist_ok=True)

    def links(folder: Path, ext: str, target: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, to in (("out", target), ("dangling", out / f"missing{ext}"), ("zero", Path("/dev/zero"))):
            (folder / f"{name}{ext}").unlink(missing_ok=True)
            (folder / f"{name}{ext}").symlink_to(to)
        if not (folder / f"fifo{ext}").exists():
            os.mkfifo(folder / f"fifo{ext}")
        (folder / f"dir{ext}").mkdir(exist_ok=True)

    links(s.input / SEC, ".mp4", out / "outside.mp4")
    links(s.models / "tuneavideo" / SEC, ".safetensors", out / "outside.safetensors")
    links(s.models / "checkpoints" / SEC, ".safetensors", out / "outside_ckpt.safetensors")
    pipe_link = s.models / "diffusers" / f"{SEC}-out"
    pipe_link.unlink(missing_ok=True)
    pipe_link.symlink_to(out / "outside-pipe", target_is_directory=True)
    # inside ComfyUI's folders, links are fine: to a clip in input/, and a folder of output/ linked into input/
    (s.input / SEC / "inside.mp4").unlink(missing_ok=True)
    (s.input / SEC / "inside.mp4").symlink_to(s.input / TEST_CLIP)
    (s.output / SEC / "clips").mkdir(parents=True, exist_ok=True)
    make_clip(s.output / SEC / "clips" / "from_output.mp4")
    (s.input / SEC / "linked").unlink(missing_ok=True)
    (s.input / SEC / "linked").symlink_to(s.output / SEC / "clips", target_is_directory=True)
    (s.input / SEC / "loop").unlink(missing_ok=True)
    (s.input / SEC / "loop").symlink_to(s.input / SEC, target_is_directory=True)  # a walk must still end
    # save nodes: a sub-folder link that carries writes out of output/ and models/tuneavideo/
    for root in (s.output, s.models / "tuneavideo"):
        (root / "escape").unlink(missing_ok=True)
        (root / "escape").symlink_to(out / "writes", target_is_directory=True)
    yield {"outside": out, "tiny_sd15": tiny_sd15}


def _outside(sec: dict, name: str) -> Path:
    return Path(sec["outside"]) / name  # type: ignore[arg-type]


def _rel_to(base: Path, target: Path) -> str:
    return os.path.relpath(target, base)


# --- the cases: (id, input value maker, value of the same shape that does not exist) --------------


def video_values(s: ComfyServer, sec: dict) -> list[tuple[str, str, str]]:
    """Values for Load Video's ``video`` and ``path``: each pair is (existing outside, missing outside)."""
    clip, missing = _outside(sec, "outside.mp4"), _outside(sec, "missing.mp4")
    return [
        ("traversal", _rel_to(s.input, clip), _rel_to(s.input, missing)),
        ("absolute", str(clip), str(missing)),
        ("symlink-out", f"{SEC}/out.mp4", f"{SEC}/dangling.mp4"),
        ("annotated-traversal", _rel_to(s.output, clip) + " [output]", _rel_to(s.output, missing) + " [output]"),
        ("dev-zero", "/dev/zero", "/dev/nonexistent"),
        ("symlink-dev-zero", f"{SEC}/zero.mp4", f"{SEC}/nothing.mp4"),
        ("fifo", f"{SEC}/fifo.mp4", f"{SEC}/nothing.mp4"),
        ("directory", f"{SEC}/dir.mp4", f"{SEC}/nothing.mp4"),
        ("example-traversal", "tav-examples/../../outside/outside.mp4", "tav-examples/../../outside/missing.mp4"),
    ]


def model_values(base: Path, sec: dict, kind_target: str, ext: str) -> list[tuple[str, str, str]]:
    """Values for a models/<kind> file input (Load Tuned, Apply To Model, Load Checkpoint)."""
    target, missing = _outside(sec, kind_target), _outside(sec, "missing" + ext)
    return [
        ("traversal", _rel_to(base, target), _rel_to(base, missing)),
        ("absolute", str(target), str(missing)),
        ("symlink-out", f"{SEC}/out{ext}", f"{SEC}/dangling{ext}"),
        ("symlink-dev-zero", f"{SEC}/zero{ext}", f"{SEC}/nothing{ext}"),
        ("fifo", f"{SEC}/fifo{ext}", f"{SEC}/nothing{ext}"),
        ("directory", f"{SEC}/dir{ext}", f"{SEC}/nothing{ext}"),
    ]


def _watched(s: ComfyServer, sec: dict) -> set[str]:
    roots = {"output": s.output, "temp": s.temp, "tuned": s.models / "tuneavideo", "outside": Path(sec["outside"])}
    return {f"{k}/{f}" for k, root in roots.items() for f in files_under(root)}


def _answer(client: ComfyClient, prompt: dict, node: str) -> str:
    """The refusal of ``node`` in a prompt that must not succeed: its /prompt errors or its execution error."""
    try:
        pid = client.queue(prompt)
    except PromptRejected as e:
        assert e.status == 400, e.body
        errs = e.body.get("node_errors", {}).get(node, {}).get("errors", [])
        assert errs, f"rejected, but not for node {node}: {e.body}"
        return " | ".join(f"{x['message']}: {x['details']}" for x in errs)
    entry = client.wait(pid, timeout=120)
    assert entry["status"]["status_str"] == "error", f"a prompt naming a file outside succeeded: {entry['status']}"
    err = status_messages(entry)["execution_error"]
    assert err["node_id"] == node, err
    return err["exception_message"]


def _check_pair(client: ComfyClient, s: ComfyServer, sec: dict, make: Callable[[str], dict], node: str,
                present: str, missing: str) -> str:  # fmt: skip
    before = _watched(s, sec)
    a, b = _answer(client, make(present), node), _answer(client, make(missing), node)
    assert "Traceback" not in a and 'File "' not in a, a
    # the oracle check: with the value itself masked, the answers are identical
    assert a.replace(present, "<V>") == b.replace(missing, "<V>"), f"\n{a}\n{b}"
    assert _watched(s, sec) == before, "a file was written or left behind"
    assert client.request("GET", "/system_stats", timeout=10)[0] == 200
    return a


@pytest.mark.parametrize("field", ["video", "path"])
@pytest.mark.parametrize("case", range(9))
def test_load_video_refuses_files_outside(client: ComfyClient, comfy_server: ComfyServer, sec: dict, field: str,
                                          case: int) -> None:  # fmt: skip
    _id, present, missing = video_values(comfy_server, sec)[case]
    msg = _check_pair(client, comfy_server, sec, lambda v: video_prompt("sec_never", **{field: v}), "1", present,
                      missing)  # fmt: skip
    expect = rf"{LISTED}|{NOT_A_VIDEO}" if field == "video" else NOT_A_VIDEO
    assert re.search(expect, msg), msg


@pytest.mark.parametrize("case", range(6))
def test_load_tuned_refuses_files_outside(client: ComfyClient, comfy_server: ComfyServer, sec: dict,
                                          case: int) -> None:  # fmt: skip
    base = comfy_server.models / "tuneavideo"
    _id, present, missing = model_values(base, sec, "outside.safetensors", ".safetensors")[case]
    msg = _check_pair(client, comfy_server, sec, load_tuned_prompt, "2", present, missing)
    assert re.search(rf"{LISTED}|{NOT_TUNED}", msg), msg


def _apply_prompt(sec: dict, tuned: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sec["tiny_sd15"]}},
        "2": {"class_type": "TAV_ApplyToModel",
              "inputs": {"model": ["1", 0], "tuned_weights": tuned, "check_base_model": True}},
        "3": {"class_type": "TAV_DDIMSigmas", "inputs": {"model": ["2", 0], "steps": 2}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }  # fmt: skip


@pytest.mark.parametrize("case", range(6))
def test_apply_to_model_refuses_files_outside(client: ComfyClient, comfy_server: ComfyServer, sec: dict,
                                              case: int) -> None:  # fmt: skip
    base = comfy_server.models / "tuneavideo"
    _id, present, missing = model_values(base, sec, "outside.safetensors", ".safetensors")[case]
    msg = _check_pair(client, comfy_server, sec, lambda v: _apply_prompt(sec, v), "2", present, missing)
    assert re.search(rf"{LISTED}|{NOT_TUNED}", msg), msg


def _checkpoint_prompt(model: str) -> dict:
    return {
        "1": {"class_type": "TAV_LoadCheckpoint",
              "inputs": {"model": model, "prediction_type": "auto", "precision": "auto"}},
        "2": {"class_type": "TAV_SaveTuned", "inputs": {"pipeline": ["1", 0], "filename_prefix": "sec_never"}},
    }  # fmt: skip


@pytest.mark.parametrize("case", range(7))
def test_load_checkpoint_refuses_files_outside(client: ComfyClient, comfy_server: ComfyServer, sec: dict,
                                               case: int) -> None:  # fmt: skip
    cases = [
        (i, "checkpoints/" + p, "checkpoints/" + m)
        for i, p, m in model_values(
            comfy_server.models / "checkpoints", sec, "outside_ckpt.safetensors", ".safetensors"
        )  # fmt: skip
    ]
    cases.append(("diffusers-symlink-out", f"diffusers/{SEC}-out", f"diffusers/{SEC}-missing"))
    _id, present, missing = cases[case]
    msg = _check_pair(client, comfy_server, sec, _checkpoint_prompt, "1", present, missing)
    assert re.search(rf"{LISTED}|{NOT_A_MODEL}", msg), msg


def test_save_nodes_refuse_a_link_out_of_their_folder(client: ComfyClient, comfy_server: ComfyServer,
                                                      sec: dict) -> None:  # fmt: skip
    before = _watched(comfy_server, sec)
    # newer hosts (0.33) refuse it in get_save_image_path themselves, with their own message
    host = r"Saving image outside the output folder is not allowed"
    for prompt, node, where in ((video_prompt("escape/sec_video"), "2", "ComfyUI's output folder"),
                                (tune_prompt("escape/sec_tuned"), "5", "models/tuneavideo")):  # fmt: skip
        msg = _answer(client, prompt, node)
        ours = re.search(rf"filename_prefix leads outside {where} \(after following symlinks\)", msg)
        assert ours or re.search(host, msg), msg
        assert not ours or str(comfy_server.root) not in msg, "the message shows the server's folders"
    assert _watched(comfy_server, sec) == before, "a file was written or left behind"
    assert not any(_outside(sec, "writes").iterdir())


def test_lists_offer_only_files_inside(client: ComfyClient, sec: dict) -> None:
    info = client.object_info()
    videos = combo_options(info["TAV_LoadVideo"]["input"]["required"]["video"])
    tuned = combo_options(info["TAV_LoadTuned"]["input"]["required"]["tuned_weights"])
    models = combo_options(info["TAV_LoadCheckpoint"]["input"]["required"]["model"])
    for bad in ("out", "dangling", "zero", "fifo", "dir"):
        assert f"{SEC}/{bad}.mp4" not in videos
        assert f"{SEC}/{bad}.safetensors" not in tuned
        assert f"checkpoints/{SEC}/{bad}.safetensors" not in models
    assert f"diffusers/{SEC}-out" not in models
    assert not any("/loop/" in v for v in videos), "a symlink loop was walked into"
    # inside ComfyUI's folders links keep working, and so do the bundled assets linked in (docs/nodes.md)
    assert {f"{SEC}/inside.mp4", f"{SEC}/linked/from_output.mp4", TEST_CLIP} <= set(videos)
    assert "diffusers/tav-shapes" in models and f"checkpoints/{sec['tiny_sd15']}" in models
    assert "tav-examples/car-turn.mp4" in videos


@pytest.mark.parametrize("load", [{"video": f"{SEC}/inside.mp4"}, {"video": f"{SEC}/linked/from_output.mp4"},
                                  {"path": f"{SEC}/linked/from_output.mp4"},
                                  {"path": f"../output/{SEC}/clips/from_output.mp4"},
                                  {"path": f"{SEC}/clips/from_output.mp4 [output]"}])  # fmt: skip
def test_links_inside_comfyui_folders_load(client: ComfyClient, sec: dict, load: dict) -> None:
    _, entry = client.run(video_prompt(f"sec/ok_{uuid.uuid4().hex[:6]}", **load), timeout=120)
    assert entry["status"]["status_str"] == "success", error_text(entry)


# --- the node code itself, below ComfyUI's list validation (in a process of the host's Python) ------


def _node_code(s: ComfyServer, cases: list[tuple[str, str]]) -> list[tuple[Optional[str], Optional[str]]]:
    script = Path(__file__).with_name("security_inprocess.py")
    cmd = [PYTHON, str(script), "--comfy-dir", str(COMFY_DIR), "--root", str(s.root)]
    res = subprocess.run(cmd, input=json.dumps(cases), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return [tuple(r) for r in json.loads([x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1][7:])]


def test_node_code_refuses_below_list_validation(comfy_server: ComfyServer, sec: dict) -> None:
    """The execution-time checks refuse every case by themselves, with one message per input."""
    s = comfy_server
    pairs = [(kind, p, m) for kind in ("video", "path") for _i, p, m in video_values(s, sec)]
    tuned = model_values(s.models / "tuneavideo", sec, "outside.safetensors", ".safetensors")
    pairs += [("tuned", p, m) for _i, p, m in tuned]
    ckpts = model_values(s.models / "checkpoints", sec, "outside_ckpt.safetensors", ".safetensors")
    pairs += [("checkpoint", "checkpoints/" + p, "checkpoints/" + m) for _i, p, m in ckpts]
    pairs.append(("checkpoint", f"diffusers/{SEC}-out", f"diffusers/{SEC}-missing"))
    inside = [("video", f"{SEC}/inside.mp4"), ("checkpoint", f"checkpoints/{sec['tiny_sd15']}"),
              ("checkpoint", MODEL), ("path", f"{SEC}/linked/from_output.mp4")]  # fmt: skip
    cases = [(k, v) for k, p, m in pairs for v in (p, m)] + inside
    got = _node_code(s, cases)
    for i, (kind, present, missing) in enumerate(pairs):
        (full_p, msg_p), (full_m, msg_m) = got[2 * i], got[2 * i + 1]
        assert full_p is None and full_m is None, (kind, present)
        if kind != "checkpoint":  # the checkpoint loader's one message is raised by the node from the None
            assert msg_p and msg_p.replace(present, "<V>") == msg_m.replace(missing, "<V>"), (msg_p, msg_m)
    # and what is inside still resolves, to its real path
    resolved = got[-len(inside) :]
    assert resolved[0] == (str((s.input / TEST_CLIP).resolve()), None)
    assert all(r[0] for r in resolved), resolved
