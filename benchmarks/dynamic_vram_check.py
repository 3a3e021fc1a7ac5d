"""Dynamic VRAM on and off: the pack's two model paths on a live ComfyUI host, in each mode the host can give.

ComfyUI >= 0.16 swaps in ``ModelPatcherDynamic`` (comfy-aimdo) by default on NVIDIA GPUs: weights may be
created empty and filled lazily, and ``load_models_gpu(force_patch_weights=True)`` asserts. Nothing in the
CPU suite can run that mode, so this check starts the host once per mode and queues, over HTTP:

- ``native``: the MODEL path of ``workflows/api/tav_native_edit.json`` (stock Load Checkpoint → From ComfyUI
  Models → Inflate → Tune → Invert → Tune-A-Video → MODEL → stock SamplerCustomAdvanced);
- ``pipeline``: the pipeline nodes of ``workflows/api/tav_dreambooth_checkpoint.json`` (stock Load
  Checkpoint → From ComfyUI Models → Inflate → Tune → Invert → Sample Video);

each ending in a stock Save Latent, on a random-weight SD1.5-shaped checkpoint (``scripts/make_tiny_sd15.py``,
or ``--checkpoint`` for a real one) and a copy of the shipped man-skiing clip. Tuning runs at lr 1e-3 so the
tuned weights move the result: a mode that silently lost them would disagree with the other.

Modes: ``off`` passes ``--disable-dynamic-vram`` where the host has the flag (a host without dynamic VRAM
runs plainly); ``on`` is the host's default and is checked against its log line "DynamicVRAM support
detected and enabled". Which flags exist is read from ``main.py --help``, never from a version string. A
mode the host cannot give (no dynamic VRAM before 0.16; ``--cpu``, where ComfyUI keeps the plain
ModelPatcher) is reported ``{"available": false, "why": ...}`` and not run.

Per mode and path: ok or the host's error text, wall seconds (queue to finished, polled every 0.25 s), and
on CUDA the peak device-wide used memory (``torch.cuda.mem_get_info`` every 50 ms from a thread here: it
counts every process on the GPU, this one's own CUDA context included; ``gpu_used_before_bytes`` is the
same figure just before queueing). With both modes run, max |on - off| / max |off| of each path's latents
must stay within ``--tolerance``. Exit status 1 if any available case failed or disagreed, 2 if the host
is not set up; the JSON is written either way. No GPU figures exist yet.

    .venv/bin/python benchmarks/dynamic_vram_check.py --comfy-dir ComfyUI --comfy-python ComfyUI/venv/bin/python \\
        --device cuda --out benchmarks/dynamic_vram_<gpu>.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "e2e")]

import torch  # noqa: E402
from comfy_client import ComfyClient, PromptRejected, error_text  # noqa: E402
from comfy_process import ComfyProcess  # noqa: E402
from helpers import load_api, node_of, rel, set_inputs  # noqa: E402

MODES = ("off", "on")
FLAG_OFF = "--disable-dynamic-vram"
FLAG_ON = "--enable-dynamic-vram"
#: what ComfyUI's main.py logs once ModelPatcherDynamic replaces the core patcher
ENABLED_LINE = "DynamicVRAM support detected and enabled"
DYNAMIC_MENTION = re.compile(r"dynamic\s?vram", re.IGNORECASE)
#: newer hosts colour their log levels
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
PACK_LINK = "comfyui-tuneavideo"
CLIP_SOURCE = REPO / "official_examples" / "videos" / "man-skiing.mp4"
CLIP = "tav_dynamic_vram_clip.mp4"
TINY_CHECKPOINT = "tav_dynamic_vram_sd15.safetensors"
#: path name -> (API workflow, the node whose LATENT is saved, its output index)
PATHS = {
    "native": ("tav_native_edit", "SamplerCustomAdvanced", 0),
    "pipeline": ("tav_dreambooth_checkpoint", "TAV_Sample", 1),
}
#: frames, size, DDIM steps, tuning steps by device: tiny on the CPU, a few minutes for both modes on one GPU
DEFAULTS = {"cpu": (2, 32, 2, 1), "cuda": (8, 512, 20, 10)}


class SetupError(Exception):
    """The host or its inputs are not usable; nothing was run."""


@dataclass(frozen=True)
class Settings:
    device: str
    frames: int
    size: int
    steps: int
    tune_steps: int
    learning_rate: float
    timeout: float


@dataclass(frozen=True)
class Case:
    """How to start the host for one mode: ``args``, or ``why`` it cannot be given."""

    args: Optional[list[str]] = None
    why: Optional[str] = None


# --- feature detection ------------------------------------------------------------------------------


def help_flags(help_text: str) -> frozenset[str]:
    """The dynamic VRAM flags an argparse ``--help`` text offers."""
    return frozenset(f for f in (FLAG_OFF, FLAG_ON) if re.search(rf"(?<![\w-]){f}(?![\w-])", help_text))


def plan_modes(help_text: str, device: str) -> dict[str, Case]:
    """The host arguments of each mode, from the host's ``--help`` (mentions of dynamic VRAM count too,
    so a host that has it but dropped the announced-for-removal ``--disable-dynamic-vram`` is not taken
    for one without it)."""
    flags = help_flags(help_text)
    has_dynamic = bool(flags) or bool(DYNAMIC_MENTION.search(help_text))
    if not has_dynamic:
        return {
            "off": Case(args=[]),
            "on": Case(why=f"the host has no dynamic VRAM (neither {FLAG_OFF} nor {FLAG_ON} in main.py --help)"),
        }
    off = Case(args=[FLAG_OFF]) if FLAG_OFF in flags else Case(why=f"the host has dynamic VRAM but no {FLAG_OFF}")
    if device == "cpu":
        return {"off": off, "on": Case(why="--cpu: ComfyUI keeps the plain ModelPatcher on the CPU")}
    return {"off": off, "on": Case(args=[])}


def host_help(comfy_dir: Path, python: str) -> str:
    res = subprocess.run([python, "main.py", "--help"], cwd=comfy_dir, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise SetupError(f"{python} main.py --help failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout


def check_host(comfy_dir: Path) -> None:
    """The host must be a ComfyUI whose custom_nodes link loads this very checkout."""
    if not (comfy_dir / "main.py").is_file():
        raise SetupError(f"no ComfyUI at {comfy_dir} (no main.py)")
    link = comfy_dir / "custom_nodes" / PACK_LINK
    if not link.exists() or link.resolve() != REPO:
        raise SetupError(f"{link} does not point at {REPO}: link it with `ln -sfn {REPO} {link}`")


# --- the host -------------------------------------------------------------------------------------


class Host(ComfyProcess):
    """One ComfyUI server on a throw-away folder set under ``root`` (shared by the modes)."""

    def __init__(self, root: Path, comfy_dir: Path, python: str) -> None:
        super().__init__(root, comfy_dir, python, ("checkpoints",), name="tav_dynamic_vram")

    def start(self, mode: str, args: list[str]) -> None:
        # the pack ships its tokenizers; never wait on the network
        env = {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        self.launch(args, env, log=self.root / f"server_{mode}.log")


def prepare_assets(host: Host, checkpoint: Optional[Path]) -> str:
    """The clip in input/ and the checkpoint in models/checkpoints; returns the checkpoint's name."""
    shutil.copyfile(CLIP_SOURCE, host.input / CLIP)
    if checkpoint is not None:
        (host.models / "checkpoints" / checkpoint.name).symlink_to(checkpoint.resolve())
        return checkpoint.name
    out = host.models / "checkpoints" / TINY_CHECKPOINT
    cmd = [host.python, str(REPO / "scripts" / "make_tiny_sd15.py"), str(out), "--comfy-dir", str(host.comfy_dir)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise SetupError(f"make_tiny_sd15.py failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return TINY_CHECKPOINT


# --- the graphs -----------------------------------------------------------------------------------


def ancestors(prompt: dict, node: str) -> set[str]:
    """``node`` and every node it reads from."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += [v[0] for v in prompt[n]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return seen


def graph(path: str, s: Settings, checkpoint: str, prefix: str) -> tuple[dict, str]:
    """One shipped API workflow at the check's sizes, cut down to what feeds a stock Save Latent of its
    result; returns the prompt and the Save Latent node's id."""
    workflow, source, index = PATHS[path]
    p = load_api(workflow)
    set_inputs(p, "CheckpointLoaderSimple", ckpt_name=checkpoint)
    set_inputs(p, "TAV_LoadVideo", video=CLIP, n_frames=s.frames, start=0, stride=1, width=s.size, height=s.size)
    set_inputs(p, "TAV_Tune", steps=s.tune_steps, learning_rate=s.learning_rate)
    set_inputs(p, "TAV_DDIMInvert", steps=s.steps)
    set_inputs(p, "TAV_DDIMSigmas", steps=s.steps)
    set_inputs(p, "TAV_Sample", steps=s.steps, frames=s.frames, width=s.size, height=s.size)
    save = str(max(int(k) for k in p) + 1)
    p[save] = {
        "class_type": "SaveLatent",
        "inputs": {"samples": [node_of(p, source), index], "filename_prefix": prefix},
    }
    return {k: v for k, v in p.items() if k in ancestors(p, save)}, save


# --- measuring ------------------------------------------------------------------------------------


class DevicePeak:
    """Peak device-wide used memory (total - free) while the block runs, polled every 50 ms on CUDA.

    Counts every process on the GPU, this one's CUDA context included; on the CPU both figures are None."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"
        self.before: Optional[int] = None
        self.peak: Optional[int] = None
        self._stop = threading.Event()

    @staticmethod
    def used() -> int:
        free, total = torch.cuda.mem_get_info()
        return total - free

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak or 0, self.used())

    def __enter__(self) -> DevicePeak:
        if self.cuda:
            self.before = self.peak = self.used()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak or 0, self.used())


def run_path(host: Host, client: ComfyClient, path: str, s: Settings, checkpoint: str, mode: str) -> dict:
    prompt, save = graph(path, s, checkpoint, f"dynamic_vram/{mode}_{path}")
    row: dict[str, Any] = {"ok": False}
    t0 = time.perf_counter()
    with DevicePeak(s.device) as mem:
        try:
            _, entry = client.run(prompt, timeout=s.timeout)
        except (PromptRejected, TimeoutError, AssertionError, OSError) as e:
            entry = {"status": {"status_str": "not run"}, "error": str(e)}
    row.update(wall_s=time.perf_counter() - t0, gpu_used_before_bytes=mem.before, gpu_used_peak_bytes=mem.peak)
    if entry["status"].get("status_str") != "success":
        row["error"] = entry.get("error") or error_text(entry)
        return row
    rec = entry["outputs"][save]["latents"][0]
    row.update(ok=True, latent=str(Path(rec["subfolder"]) / rec["filename"]))
    x = latent_file(host, row)
    row["shape"] = list(x.shape)
    row.update(finite=bool(torch.isfinite(x).all()), std=float(x.double().std()))
    return row


def dynamic_vram_lines(log: str) -> list[str]:
    return [ANSI_COLOUR.sub("", line).strip() for line in log.splitlines() if DYNAMIC_MENTION.search(line)][:20]


def run_mode(host: Host, mode: str, case: Case, s: Settings, checkpoint: str) -> dict:
    """Start the host in one mode, check the mode took, run both paths, stop it."""
    if case.args is None:
        return {"available": False, "why": case.why}
    args = (["--cpu"] if s.device == "cpu" else []) + case.args
    out: dict[str, Any] = {"available": True, "host_args": args, "ok": False}
    t0 = time.perf_counter()
    host.start(mode, args)
    try:
        host.wait_ready(timeout=300)
        out["startup_s"] = time.perf_counter() - t0
        log = host.log_text()
        active = ENABLED_LINE in log
        out.update(dynamic_vram_active=active, dynamic_vram_log=dynamic_vram_lines(log))
        if mode == "on" and not active:
            return {"available": False, "why": f"the host started without dynamic VRAM: {out['dynamic_vram_log']}"}
        if mode == "off" and active:
            out["error"] = f"dynamic VRAM is on although the host was started with {args}"
            return out
        client = ComfyClient(host.url)
        out["paths"] = {p: run_path(host, client, p, s, checkpoint, mode) for p in PATHS}
        out["ok"] = all(r["ok"] for r in out["paths"].values())
    except RuntimeError as e:
        out["error"] = str(e)
    finally:
        host.stop()
    return out


def compare(host: Host, modes: dict, tolerance: float) -> Optional[dict]:
    """max |on - off| / max |off| of each path that ran in both modes; None unless both modes ran."""
    if not all(modes[m].get("available") and "paths" in modes[m] for m in MODES):
        return None
    out = {}
    for p in PATHS:
        on, off = modes["on"]["paths"][p], modes["off"]["paths"][p]
        if on["ok"] and off["ok"]:
            err = rel(latent_file(host, on), latent_file(host, off))
            out[p] = {"rel_diff": err, "agree": err <= tolerance}
    return out


def latent_file(host: Host, row: dict) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(host.output / row["latent"]))["latent_tensor"]


def overall_ok(modes: dict, comparison: Optional[dict]) -> bool:
    """Every mode that was available ran cleanly, and the modes agree where both ran."""
    ran = [m for m in modes.values() if m.get("available")]
    return all(m["ok"] for m in ran) and all(c["agree"] for c in (comparison or {}).values())


# --- command line ---------------------------------------------------------------------------------


def settings(a: argparse.Namespace) -> Settings:
    frames, size, steps, tune_steps = DEFAULTS[a.device]
    return Settings(
        device=a.device,
        frames=a.frames or frames,
        size=a.size or size,
        steps=a.steps or steps,
        tune_steps=a.tune_steps or tune_steps,
        learning_rate=a.learning_rate,
        timeout=a.timeout,
    )


def check(a: argparse.Namespace, work: Path) -> dict:
    s = settings(a)
    result: dict[str, Any] = {"comfy_dir": str(a.comfy_dir), "comfy_python": a.comfy_python, "settings": vars(s)}
    check_host(a.comfy_dir)
    help_text = host_help(a.comfy_dir, a.comfy_python)
    result["host_flags"] = sorted(help_flags(help_text))
    if a.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    host = Host(work, a.comfy_dir, a.comfy_python)
    checkpoint = prepare_assets(host, a.checkpoint)
    result["checkpoint"] = checkpoint
    plan = plan_modes(help_text, a.device)
    result["modes"] = {m: run_mode(host, m, plan[m], s, checkpoint) for m in MODES}
    result["comparison"] = compare(host, result["modes"], a.tolerance)
    result["ok"] = overall_ok(result["modes"], result["comparison"])
    return result


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfy-dir", type=Path, required=True, help="the ComfyUI folder (its main.py is started)")
    p.add_argument("--comfy-python", default=sys.executable, help="the Python that runs ComfyUI")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"], help="auto: cuda if available")
    p.add_argument("--checkpoint", type=Path, help="a real SD1.x checkpoint instead of the random tiny one")
    p.add_argument("--frames", type=int, help="frames (default 2 on the CPU, 8 on CUDA)")
    p.add_argument("--size", type=int, help="width and height (default 32 on the CPU, 512 on CUDA)")
    p.add_argument("--steps", type=int, help="DDIM inversion and sampling steps (default 2 / 20)")
    p.add_argument("--tune-steps", type=int, help="tuning steps (default 1 / 10)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="tuning rate (large, so the tuning shows)")
    p.add_argument("--tolerance", type=float, default=0.05, help="largest on/off max|diff| / max|ref| that passes")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one graph may run")
    p.add_argument("--work-dir", type=Path, help="keep the host's folders here (default: a temporary folder)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    a.comfy_dir = a.comfy_dir.resolve()
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    return a


@contextlib.contextmanager
def work_dir(given: Optional[Path]) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="tav_dynamic_vram_") as d:
        yield Path(d)


def main(argv: Optional[list[str]] = None) -> int:
    a = parse(argv)
    t0 = time.perf_counter()
    with work_dir(a.work_dir) as work:
        try:
            result = check(a, work)
        except SetupError as e:
            result = {"ok": False, "error": str(e)}
    result["seconds"] = time.perf_counter() - t0
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    if "error" in result:
        print(f"dynamic_vram_check: {result['error']}", file=sys.stderr)
        return 2
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
