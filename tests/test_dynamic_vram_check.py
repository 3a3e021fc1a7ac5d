"""benchmarks/dynamic_vram_check.py without a host: mode planning from ``--help`` texts, graphs, the verdict.

The help texts are synthetic argparse output (the real hosts' are read by the e2e test,
tests/e2e/test_e2e_dynamic_vram.py): one without dynamic VRAM (ComfyUI before 0.16, e.g. 0.3.75), one
laid out like 0.33.0's (both flags, wrapped usage), and one that has dynamic VRAM but no longer the
``--disable-dynamic-vram`` that upstream says "will be removed soon".
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dynamic_vram_check.py"
_spec = importlib.util.spec_from_file_location("dynamic_vram_check", SCRIPT)
dvc = importlib.util.module_from_spec(_spec)
sys.modules["dynamic_vram_check"] = dvc
_spec.loader.exec_module(dvc)

OLD_HELP = """usage: main.py [-h] [--listen [IP]] [--cpu] [--lowvram] [--novram]
               [--disable-smart-memory] [--fast [FAST ...]]

options:
  --lowvram             Split the unet in parts to use less vram.
  --disable-smart-memory
                        Force ComfyUI to agressively offload to regular ram
"""
NEW_HELP = """usage: main.py [-h] [--listen [IP]] [--cpu] [--lowvram] [--novram]
               [--disable-async-offload] [--disable-dynamic-vram]
               [--enable-dynamic-vram] [--fast-disk]

options:
  --lowvram             Doesn't do anything if dynamic vram is enabled.
  --disable-dynamic-vram
                        Disable dynamic VRAM and use estimate based model
                        loading.
  --enable-dynamic-vram
                        Enable dynamic VRAM on systems where it's not enabled
                        by default.
"""
NO_DISABLE_HELP = """usage: main.py [-h] [--cpu] [--vram-headroom VRAM_HEADROOM]

options:
  --vram-headroom VRAM_HEADROOM
                        Set the amount of vram in GB for DynamicVRAM to maintain as extra headroom.
"""


def test_flags_are_read_as_whole_options() -> None:
    assert dvc.help_flags(OLD_HELP) == frozenset()
    assert dvc.help_flags(NEW_HELP) == {"--disable-dynamic-vram", "--enable-dynamic-vram"}
    assert dvc.help_flags("  --disable-dynamic-vram-cache  --no-enable-dynamic-vram") == frozenset()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_host_without_dynamic_vram_runs_off_plainly_and_cannot_give_on(device: str) -> None:
    plan = dvc.plan_modes(OLD_HELP, device)
    assert plan["off"] == dvc.Case(args=[])
    assert plan["on"].args is None and "no dynamic VRAM" in plan["on"].why


def test_a_dynamic_vram_host_on_cuda_gives_both_modes() -> None:
    plan = dvc.plan_modes(NEW_HELP, "cuda")
    assert plan == {"off": dvc.Case(args=["--disable-dynamic-vram"]), "on": dvc.Case(args=[])}


def test_a_dynamic_vram_host_on_the_cpu_cannot_give_on() -> None:
    plan = dvc.plan_modes(NEW_HELP, "cpu")
    assert plan["off"] == dvc.Case(args=["--disable-dynamic-vram"])
    assert plan["on"].args is None and "--cpu" in plan["on"].why


def test_a_dynamic_vram_host_without_the_disable_flag_cannot_give_off() -> None:
    plan = dvc.plan_modes(NO_DISABLE_HELP, "cuda")
    assert plan["off"].args is None and "--disable-dynamic-vram" in plan["off"].why
    assert plan["on"] == dvc.Case(args=[])


@pytest.mark.parametrize(("path", "needs", "source"), [
    ("native", {"CheckpointLoaderSimple", "TAV_ApplyToModel", "TAV_InvertedToLatent"}, "SamplerCustomAdvanced"),
    ("pipeline", {"CheckpointLoaderSimple", "TAV_FromComfyModels", "TAV_DDIMInvert"}, "TAV_Sample"),
])  # fmt: skip
def test_graphs_keep_only_what_feeds_the_saved_latent(path: str, needs: set[str], source: str) -> None:
    s = dvc.Settings("cpu", frames=3, size=48, steps=4, tune_steps=2, learning_rate=1e-3, timeout=60)
    p, save = dvc.graph(path, s, "ckpt.safetensors", f"dynamic_vram/off_{path}")
    classes = {v["class_type"] for v in p.values()}
    assert needs | {"TAV_Tune", "SaveLatent", source} <= classes
    assert not classes & {"TAV_SaveVideo", "PreviewImage", "VAEDecode"}
    assert p[save]["inputs"]["samples"][0] == dvc.node_of(p, source)
    assert p[save]["inputs"]["filename_prefix"] == f"dynamic_vram/off_{path}"
    video = p[dvc.node_of(p, "TAV_LoadVideo")]["inputs"]
    assert (video["video"], video["n_frames"], video["width"], video["height"]) == (dvc.CLIP, 3, 48, 48)
    assert p[dvc.node_of(p, "TAV_Tune")]["inputs"]["steps"] == 2


def _mode(ok: bool) -> dict:
    return {"available": True, "ok": ok, "paths": {}}


def test_the_verdict_fails_on_any_available_failure_or_disagreement() -> None:
    unavailable = {"available": False, "why": "--cpu"}
    assert dvc.overall_ok({"off": _mode(True), "on": unavailable}, None)
    assert not dvc.overall_ok({"off": _mode(False), "on": unavailable}, None)
    assert not dvc.overall_ok({"off": _mode(True), "on": _mode(False)}, {})
    agree = {"native": {"rel_diff": 0.0, "agree": True}, "pipeline": {"rel_diff": 0.5, "agree": False}}
    assert not dvc.overall_ok({"off": _mode(True), "on": _mode(True)}, agree)
    assert dvc.overall_ok({"off": _mode(True), "on": _mode(True)}, {"native": agree["native"]})


def test_the_modes_are_compared_by_max_diff_over_max_ref(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    ref = torch.tensor([[1.0, -4.0], [2.0, 0.5]])
    save_file({"latent_tensor": ref}, str(tmp_path / "off.latent"))
    save_file({"latent_tensor": ref + torch.tensor([[0.0, 0.2], [0.0, 0.0]])}, str(tmp_path / "on.latent"))
    row = {"native": {"ok": True, "latent": "off.latent"}, "pipeline": {"ok": False, "error": "boom"}}
    off = {"available": True, "ok": False, "paths": row}
    on = {"available": True, "ok": False, "paths": {**row, "native": {"ok": True, "latent": "on.latent"}}}
    host = type("FakeHost", (), {"output": tmp_path})()
    result = dvc.compare(host, {"off": off, "on": on}, tolerance=0.06)
    assert set(result) == {"native"} and result["native"]["agree"] is True
    assert result["native"]["rel_diff"] == pytest.approx(0.05, rel=1e-5)  # the float32 latents' rounding
    assert dvc.compare(host, {"off": off, "on": on}, tolerance=0.04)["native"]["agree"] is False
    assert dvc.compare(host, {"off": off, "on": {"available": False, "why": "--cpu"}}, tolerance=0.06) is None


def test_the_log_lines_about_dynamic_vram_are_kept_without_colours() -> None:
    log = "\x1b[32m[INFO]\x1b[0m DynamicVRAM support detected and enabled\nTotal VRAM 81559 MB\n"
    log += "\x1b[1m\x1b[33m[WARNING]\x1b[0m Dynamic vram disabled with argument.\n"
    assert dvc.dynamic_vram_lines(log) == [
        "[INFO] DynamicVRAM support detected and enabled",
        "[WARNING] Dynamic vram disabled with argument.",
    ]


def test_gpu_check_reports_a_host_whose_pack_link_is_elsewhere(tmp_path: Path) -> None:
    import argparse

    import torch

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT.with_name("gpu_check.py"))
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "main.py").touch()
    (comfy / "custom_nodes" / "comfyui-tuneavideo").symlink_to(tmp_path, target_is_directory=True)
    args = argparse.Namespace(comfy_dir=str(comfy), comfy_python=None)
    result = gpu_check.check_dynamic_vram(args, torch.device("cpu"))
    assert result["ok"] is False and "does not point at" in result["error"] and str(dvc.REPO) in result["error"]


class _FailingClient:
    """Stands in for ComfyClient: the prompt is refused, or it runs and fails in a node."""

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse

    def run(self, prompt: dict, timeout: float) -> tuple[str, dict]:
        if self.refuse:
            raise dvc.PromptRejected(400, {"error": {"message": "Prompt outputs failed validation"}})
        err = {"node_type": "TAV_Tune", "exception_message": "weight is None", "traceback": ["  File x\n"]}
        return "id", {"status": {"status_str": "error", "messages": [["execution_error", err]]}, "outputs": {}}


@pytest.mark.parametrize(("refuse", "text"), [(True, "failed validation"), (False, "TAV_Tune: weight is None")])
def test_a_failing_graph_is_reported_with_the_hosts_error(tmp_path: Path, refuse: bool, text: str) -> None:
    s = dvc.Settings("cpu", frames=2, size=32, steps=2, tune_steps=1, learning_rate=1e-3, timeout=60)
    host = type("FakeHost", (), {"output": tmp_path})()
    row = dvc.run_path(host, _FailingClient(refuse), "native", s, "ckpt.safetensors", "off")
    assert row["ok"] is False and text in row["error"] and row["wall_s"] >= 0 and row["gpu_used_peak_bytes"] is None
