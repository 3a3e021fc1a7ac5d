"""Bad input through the CLI: every case is refused before any work with one actionable line.

Each case asserts exit status 2, an ``error:`` line matching what is wrong and what to do, no
traceback, and that no file (not even a temp file) appeared anywhere under the case's folder.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tav.cli import main
from tav.video_io import write_video

from .bad_inputs import (
    break_json,
    evil_pickle,
    files_under,
    png_as_mp4,
    safetensors_with_meta,
    truncated,
    with_nan_payload,
)
from .test_checkpoints import sd1 as _sd1  # noqa: F401 - fixture
from .test_cli import moving_square, save_diffusers_folder


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model, a 6-frame clip, and good tuned weights + latents made by the CLI itself."""
    root = tmp_path_factory.mktemp("bad_cli_env")
    model = save_diffusers_folder(root / "model")
    video = root / "square.mp4"
    write_video(video, moving_square(6), fps=8)
    common = ["--model", str(model), "--video", str(video), "--frames", "3", "--stride", "1"]
    common += ["--width", "64", "--height", "64"]
    tuned = root / "tuned.safetensors"
    assert main(["tune", *common, "--prompt", "a red square", "--steps", "1", "--out", str(tuned)]) == 0
    latents = root / "inv.safetensors"
    assert main(["invert", *common, "--tuned", str(tuned), "--inversion-steps", "2", "--out", str(latents)]) == 0
    other = save_diffusers_folder(root / "other_model", seed=5)
    return {"root": root, "model": model, "video": video, "tuned": tuned, "latents": latents, "other": other}


Argv = dict[str, object]


def tune_args(env: dict[str, Path], tmp: Path, **kw: object) -> list[str]:
    base: Argv = {
        "--model": env["model"], "--video": env["video"], "--frames": 3, "--stride": 1, "--width": 64,
        "--height": 64, "--prompt": "a red square", "--steps": 1, "--out": tmp / "out" / "t.safetensors",
    }  # fmt: skip
    return ["tune", *_flags(base, kw)]


def invert_args(env: dict[str, Path], tmp: Path, **kw: object) -> list[str]:
    base: Argv = {
        "--model": env["model"], "--video": env["video"], "--frames": 3, "--stride": 1, "--width": 64,
        "--height": 64, "--tuned": env["tuned"], "--inversion-steps": 2, "--out": tmp / "out" / "inv.safetensors",
    }  # fmt: skip
    return ["invert", *_flags(base, kw)]


def sample_args(env: dict[str, Path], tmp: Path, **kw: object) -> list[str]:
    base: Argv = {
        "--model": env["model"], "--tuned": env["tuned"], "--latents": env["latents"],
        "--prompt": "a blue square", "--sample-steps": 2, "--out-dir": tmp / "out",
    }  # fmt: skip
    return ["sample", *_flags(base, kw)]


def edit_args(env: dict[str, Path], tmp: Path, **kw: object) -> list[str]:
    base: Argv = {
        "--model": env["model"], "--video": env["video"], "--frames": 3, "--stride": 1, "--width": 64,
        "--height": 64, "--prompt": "a red square", "--edit": "a blue square", "--steps": 1,
        "--inversion-steps": 2, "--sample-steps": 2, "--out-dir": tmp / "out",
    }  # fmt: skip
    return ["edit", *_flags(base, kw)]


def plan_args(env: dict[str, Path], tmp: Path, **kw: object) -> list[str]:
    return ["plan", *_flags({"--frames": 2, "--width": 64, "--height": 64}, kw)]


def config_args(env: dict[str, Path], tmp: Path, **kw: object) -> list[str]:
    config = kw.pop("config")
    return ["config", str(config), *_flags({"--output-dir": tmp / "out"}, kw)]


def _flags(base: Argv, kw: dict[str, object]) -> list[str]:
    merged = dict(base)
    for key, value in kw.items():
        merged["--" + key.replace("_", "-")] = value
    out: list[str] = []
    for flag, value in merged.items():
        if value is not None:
            out += [flag, str(value)]
    return out


# --- file makers: (env, tmp) -> path of a bad file inside tmp/in ------------------------------


def _in(tmp: Path, name: str) -> Path:
    (tmp / "in").mkdir(exist_ok=True)
    return tmp / "in" / name


def _copy_model(env: dict[str, Path], tmp: Path) -> Path:
    dst = _in(tmp, "model")
    shutil.copytree(env["model"], dst)
    return dst


def _pickled_part(env: dict[str, Path], tmp: Path, part: str, weights: str, pickle_name: str) -> Path:
    """A copy of the model whose ``part`` has its safetensors replaced by a malicious pickle."""
    m = _copy_model(env, tmp)
    (m / part / weights).unlink()
    evil_pickle(m / part / pickle_name, tmp / "in" / "PWNED")
    return m


def model_pickled_unet(env: dict[str, Path], tmp: Path) -> Path:
    return _pickled_part(env, tmp, "unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def model_pickled_text_encoder(env: dict[str, Path], tmp: Path) -> Path:
    return _pickled_part(env, tmp, "text_encoder", "model.safetensors", "pytorch_model.bin")


def model_pickled_vae(env: dict[str, Path], tmp: Path) -> Path:
    return _pickled_part(env, tmp, "vae", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def model_broken_index(env: dict[str, Path], tmp: Path) -> Path:
    m = _copy_model(env, tmp)
    break_json(m / "model_index.json")
    return m


def model_broken_vae_config(env: dict[str, Path], tmp: Path) -> Path:
    m = _copy_model(env, tmp)
    (m / "vae" / "config.json").write_text("{not json")
    return m


def model_truncated_unet(env: dict[str, Path], tmp: Path) -> Path:
    m = _copy_model(env, tmp)
    f = m / "unet" / "diffusion_pytorch_model.safetensors"
    truncated(f, f, 0.4)
    return m


def model_nan_unet(env: dict[str, Path], tmp: Path) -> Path:
    m = _copy_model(env, tmp)
    f = m / "unet" / "diffusion_pytorch_model.safetensors"
    with_nan_payload(f, f)
    return m


def model_no_index(env: dict[str, Path], tmp: Path) -> Path:
    m = _copy_model(env, tmp)
    (m / "model_index.json").unlink()
    return m


def ckpt_evil(env: dict[str, Path], tmp: Path) -> Path:
    return evil_pickle(_in(tmp, "model.ckpt"), tmp / "in" / "PWNED")


def pt_evil(env: dict[str, Path], tmp: Path) -> Path:
    return evil_pickle(_in(tmp, "model.pt"), tmp / "in" / "PWNED")


def safetensors_random(env: dict[str, Path], tmp: Path) -> Path:
    f = _in(tmp, "model.safetensors")
    f.write_bytes(b"\x00" * 16 + b"garbage" * 100)
    return f


def safetensors_not_sd(env: dict[str, Path], tmp: Path) -> Path:
    f = _in(tmp, "lora.safetensors")
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, f)
    return f


def video_random(env: dict[str, Path], tmp: Path) -> Path:
    f = _in(tmp, "clip.mp4")
    f.write_bytes(bytes(range(256)) * 40)
    return f


def video_text(env: dict[str, Path], tmp: Path) -> Path:
    f = _in(tmp, "notes.mp4")
    f.write_text("this is not a video\n" * 50)
    return f


def video_png(env: dict[str, Path], tmp: Path) -> Path:
    return png_as_mp4(_in(tmp, "still.mp4"))


def video_empty(env: dict[str, Path], tmp: Path) -> Path:
    f = _in(tmp, "empty.mp4")
    f.write_bytes(b"")
    return f


def video_truncated(env: dict[str, Path], tmp: Path) -> Path:
    return truncated(env["video"], _in(tmp, "cut.mp4"), 0.1)


def tuned_partial_meta(env: dict[str, Path], tmp: Path) -> Path:
    meta = {"format": "tav-tuned/1", "norm": "video", "attention": "sparse_causal"}
    return safetensors_with_meta(_in(tmp, "t.safetensors"), {"a": torch.zeros(2)}, meta)


def tuned_truncated(env: dict[str, Path], tmp: Path) -> Path:
    return truncated(env["tuned"], _in(tmp, "t.safetensors"), 0.5)


def tuned_nan(env: dict[str, Path], tmp: Path) -> Path:
    return with_nan_payload(env["tuned"], _in(tmp, "t.safetensors"))


def tuned_text(env: dict[str, Path], tmp: Path) -> Path:
    f = _in(tmp, "t.safetensors")
    f.write_text('{"hello": 1}')
    return f


def tuned_pickle(env: dict[str, Path], tmp: Path) -> Path:
    return evil_pickle(_in(tmp, "t.safetensors"), tmp / "in" / "PWNED")


def tuned_other_base(env: dict[str, Path], tmp: Path) -> Path:
    out = _in(tmp, "t_other.safetensors")
    assert main(tune_args({**env, "model": env["other"]}, tmp, out=out)) == 0
    return out


def latents_no_tensor(env: dict[str, Path], tmp: Path) -> Path:
    return safetensors_with_meta(_in(tmp, "l.safetensors"), {"x": torch.zeros(1)}, {"format": "tav-latents/1"})


def latents_nan(env: dict[str, Path], tmp: Path) -> Path:
    return with_nan_payload(env["latents"], _in(tmp, "l.safetensors"))


def latents_inf(env: dict[str, Path], tmp: Path) -> Path:
    x = torch.zeros(1, 4, 3, 8, 8)
    x[0, 0, 0, 0, 0] = float("inf")
    return safetensors_with_meta(_in(tmp, "l.safetensors"), {"latents": x}, {"format": "tav-latents/1"})


def latents_4d(env: dict[str, Path], tmp: Path) -> Path:
    meta = {"format": "tav-latents/1"}
    return safetensors_with_meta(_in(tmp, "l.safetensors"), {"latents": torch.zeros(4, 3, 8, 8)}, meta)


def latents_bad_fps(env: dict[str, Path], tmp: Path) -> Path:
    meta = {"format": "tav-latents/1", "fps": "fast"}
    return safetensors_with_meta(_in(tmp, "l.safetensors"), {"latents": torch.zeros(1, 4, 3, 8, 8)}, meta)


def latents_truncated(env: dict[str, Path], tmp: Path) -> Path:
    return truncated(env["latents"], _in(tmp, "l.safetensors"), 0.6)


def latents_wrong_channels(env: dict[str, Path], tmp: Path) -> Path:
    meta = {"format": "tav-latents/1"}
    return safetensors_with_meta(_in(tmp, "l.safetensors"), {"latents": torch.zeros(1, 3, 3, 8, 8)}, meta)


def a_dir(env: dict[str, Path], tmp: Path) -> Path:
    d = _in(tmp, "adir")
    d.mkdir()
    return d


def a_file(env: dict[str, Path], tmp: Path) -> Path:
    f = _in(tmp, "afile")
    f.write_text("x")
    return f


def under_a_file(env: dict[str, Path], tmp: Path) -> Path:
    return a_file(env, tmp) / "t.safetensors"


def fifo(env: dict[str, Path], tmp: Path) -> Path:
    f = _in(tmp, "pipe.mp4")
    os.mkfifo(f)  # nobody writes to it: opening it to read would block forever
    return f


def sd_empty(env: dict[str, Path], tmp: Path) -> Path:
    f = _in(tmp, "sd.safetensors")
    f.write_bytes(b"")
    return f


def sd_truncated(env: dict[str, Path], tmp: Path) -> Path:
    whole = _in(tmp, "whole.safetensors")
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, whole)
    cut = truncated(whole, _in(tmp, "sd.safetensors"), 0.9)
    whole.unlink()
    return cut


OFFICIAL = Path(__file__).resolve().parents[1] / "official_examples" / "configs" / "man-skiing.yaml"
PROMPTS = re.compile(r"  prompts:\n(    - .*\n)+")


def yaml_edit(old: str, new: str, regex: bool = False) -> Maker:
    """A maker of the official man-skiing config with ``old`` replaced by ``new``."""

    def make(env: dict[str, Path], tmp: Path) -> Path:
        text = OFFICIAL.read_text()
        changed = re.sub(old, new, text) if regex else text.replace(old, new)
        assert changed != text, old
        f = _in(tmp, "config.yaml")
        f.write_text(changed)
        return f

    return make


def yaml_bomb(env: dict[str, Path], tmp: Path) -> Path:
    """Nine lines that expand to 9**9 (387 million) strings when walked: the "billion laughs"."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    f = _in(tmp, "config.yaml")
    f.write_text("\n".join(lines) + "\n" + OFFICIAL.read_text().replace("n_sample_frames: 24", "n_sample_frames: *a8"))
    return f


Maker = Callable[[dict[str, Path], Path], Path]
E = r"error: "

# (id, command builder, keyword overrides (values may be makers), expected message regex)
CASES: list[tuple[str, Callable[..., list[str]], dict[str, object], str]] = [
    # numbers
    ("tune-steps-zero", tune_args, {"steps": 0}, r"--steps must be at least 1"),
    ("tune-steps-negative", tune_args, {"steps": -5}, r"--steps must be at least 1"),
    ("tune-lr-nan", tune_args, {"lr": "nan"}, r"--lr must be a finite number.*3e-5"),
    ("tune-lr-inf", tune_args, {"lr": "inf"}, r"--lr must be a finite number"),
    ("tune-lr-zero", tune_args, {"lr": 0}, r"--lr must be at least"),
    ("tune-seed-huge", tune_args, {"seed": 2**70}, r"--seed must be at most .*between 0 and 2\*\*64 - 1"),
    ("tune-seed-negative", tune_args, {"seed": -1}, r"--seed must be at least 0"),
    ("tune-frames-huge", tune_args, {"frames": 5000}, r"--frames must be at most 1024"),
    ("tune-frames-negative", tune_args, {"frames": -7}, r"--frames must be at least -1.*every frame"),
    ("tune-width-not-multiple", tune_args, {"width": 100}, r"--width must be a multiple of 8"),
    ("tune-width-huge", tune_args, {"width": 999_999}, r"--width must be at most 4096"),
    ("tune-height-zero", tune_args, {"height": 0}, r"--height must be at least 8"),
    ("tune-stride-zero", tune_args, {"stride": 0}, r"--stride must be at least 1"),
    ("tune-start-negative", tune_args, {"start": -3}, r"--start must be at least 0"),
    ("tune-job-too-big", tune_args, {"frames": 1024, "width": 4096, "height": 4096}, r"needs at least about .* GiB.*would fit"),
    ("sample-cfg-nan", sample_args, {"cfg": "nan"}, r"--cfg must be a finite number.*12\.5"),
    ("sample-cfg-inf", sample_args, {"cfg": "inf"}, r"--cfg must be a finite number"),
    ("sample-cfg-negative", sample_args, {"cfg": -1}, r"--cfg must be at least 0"),
    ("sample-eta-two", sample_args, {"eta": 2}, r"--eta must be at most 1"),
    ("sample-eta-negative", sample_args, {"eta": -0.5}, r"--eta must be at least 0"),
    ("sample-eta-nan", sample_args, {"eta": "nan"}, r"--eta must be a finite number"),
    ("sample-steps-zero", sample_args, {"sample_steps": 0}, r"--sample-steps must be at least 1"),
    ("sample-steps-huge", sample_args, {"sample_steps": 5000}, r"--sample-steps must be at most 1000"),
    ("sample-fps-zero", sample_args, {"fps": 0}, r"--fps must be at least 0\.1"),
    ("sample-fps-nan", sample_args, {"fps": "nan"}, r"--fps must be a finite number"),
    ("sample-seed-2to64", sample_args, {"sample_seed": 2**64}, r"--sample-seed must be at most"),
    ("sample-noise-size", sample_args, {"latents": None, "width": 63}, r"--width must be a multiple of 8"),
    ("invert-steps-zero", invert_args, {"inversion_steps": 0}, r"--inversion-steps must be at least 1"),
    ("edit-eta-nan", edit_args, {"eta": "nan"}, r"--eta must be a finite number"),
    ("edit-cfg-huge", edit_args, {"cfg": 1e9}, r"--cfg must be at most 100"),
    # devices
    ("device-banana", tune_args, {"device": "banana"}, r"unknown device 'banana'; use auto, cpu, cuda"),
    ("device-cuda-99", tune_args, {"device": "cuda:99"}, r"device 'cuda:99'.*(no CUDA GPU|does not exist)"),
    ("device-mps", sample_args, {"device": "mps"}, r"device 'mps' asked for, but MPS is not available"),
    # outputs
    ("tune-out-is-dir", tune_args, {"out": a_dir}, r"--out .* is a folder; give a file name"),
    ("tune-out-under-file", tune_args, {"out": under_a_file}, r"is a file, not a folder; choose another path"),
    ("tune-out-wrong-ext", tune_args, {"out": "x.txt"}, r"--out 'x\.txt' must end with \.safetensors"),
    ("invert-out-is-dir", invert_args, {"out": a_dir}, r"--out .* is a folder"),
    ("sample-outdir-is-file", sample_args, {"out_dir": a_file}, r"--out-dir .* is a file, not a folder"),
    ("edit-save-tuned-is-dir", edit_args, {"save_tuned": a_dir}, r"--save-tuned .* is a folder"),
    ("edit-outdir-under-file", edit_args, {"out_dir": under_a_file}, r"is a file, not a folder"),
    # videos
    ("video-missing", tune_args, {"video": "nowhere.mp4"}, r"video file not found: nowhere\.mp4"),
    ("video-is-dir", tune_args, {"video": a_dir}, r"video file .* is a folder, expected a file"),
    ("video-empty", tune_args, {"video": video_empty}, r"empty \(0 bytes\).*re-create"),
    ("video-random-bytes", tune_args, {"video": video_random}, r"cannot read .*clip\.mp4.* as a video.*expected mp4"),
    ("video-text-as-mp4", tune_args, {"video": video_text}, r"cannot read .*notes\.mp4.* as a video"),
    ("video-png-as-mp4", tune_args, {"video": video_png}, r"still\.mp4.* single frame: it is a still image"),
    ("video-truncated", tune_args, {"video": video_truncated}, r"cut\.mp4"),
    ("video-stride-past-end", tune_args, {"stride": 50}, r"reach only 1 frame of the 6.*use stride 2 or less"),
    ("video-start-past-end", tune_args, {"start": 60}, r"clip has 6 frames; start=60 leaves none"),
    # models
    ("model-missing", tune_args, {"model": "no/such/model"}, r"model not found: no/such/model"),
    ("model-no-index", tune_args, {"model": model_no_index}, r"not a diffusers pipeline folder \(no model_index\.json\)"),
    ("model-index-empty", tune_args, {"model": model_broken_index}, r"model_index\.json is not valid JSON"),
    ("model-vae-config-bad", tune_args, {"model": model_broken_vae_config}, r"vae/config\.json is not valid JSON"),
    ("model-unet-truncated", tune_args, {"model": model_truncated_unet}, r"cannot load .*unet.*incomplete or damaged"),
    ("model-unet-nan", tune_args, {"model": model_nan_unet}, r"unet weight .* holds NaN values; the file is corrupted"),
    ("model-pickled-unet", tune_args, {"model": model_pickled_unet}, r"refused to load .*unet/diffusion_pytorch_model\.bin"),
    ("model-pickled-vae", sample_args, {"model": model_pickled_vae}, r"refused to load .*vae/diffusion_pytorch_model\.bin"),
    ("model-pickled-text", invert_args, {"model": model_pickled_text_encoder}, r"refused to load .*text_encoder/pytorch_model\.bin"),
    ("model-ckpt-pickle", tune_args, {"model": ckpt_evil}, r"refused to load .*model\.ckpt.*\.safetensors"),
    ("model-pt-pickle", edit_args, {"model": pt_evil}, r"refused to load .*model\.pt"),
    ("model-safetensors-garbage", tune_args, {"model": safetensors_random}, r"not a readable \.safetensors file"),
    ("model-lora-not-sd", tune_args, {"model": safetensors_not_sd}, r"only Stable Diffusion 1\.x/2\.x"),
    # tuned weights
    ("tuned-partial-meta", sample_args, {"tuned": tuned_partial_meta}, r"lacks the metadata base_fingerprint.*re-save"),
    ("tuned-truncated", sample_args, {"tuned": tuned_truncated}, r"tuned weights .*t\.safetensors.* not a readable \.safetensors"),
    ("tuned-nan-bytes", sample_args, {"tuned": tuned_nan}, r"tuned weights .*t\.safetensors.* holds NaN values; the file is corrupted"),
    ("tuned-text-file", invert_args, {"tuned": tuned_text}, r"t\.safetensors.* not a readable \.safetensors"),
    ("tuned-pickle", sample_args, {"tuned": tuned_pickle}, r"t\.safetensors.* not a readable \.safetensors"),
    ("tuned-is-latents", sample_args, {"tuned": lambda env, tmp: env["latents"]}, r"not a Tune-A-Video tuned-weights file"),
    ("tuned-other-base", sample_args, {"tuned": tuned_other_base}, r"made for another base model.*Load the checkpoint they were tuned from"),
    ("tuned-missing", sample_args, {"tuned": "gone.safetensors"}, r"tuned weights not found: gone\.safetensors"),
    # latents
    ("latents-no-tensor", sample_args, {"latents": latents_no_tensor}, r"has no 'latents' tensor.*re-run"),
    ("latents-nan", sample_args, {"latents": latents_nan}, r"latents file .* holds NaN values.*re-run invert"),
    ("latents-inf", sample_args, {"latents": latents_inf}, r"holds infinite values"),
    ("latents-4d", sample_args, {"latents": latents_4d}, r"latents must be one video \[1, C, frames, h, w\]"),
    ("latents-bad-fps", sample_args, {"latents": latents_bad_fps}, r"metadata fps='fast' is not a positive number"),
    ("latents-truncated", sample_args, {"latents": latents_truncated}, r"latents file .* not a readable \.safetensors"),
    ("latents-is-tuned", sample_args, {"latents": lambda env, tmp: env["tuned"]}, r"is not a latents file.*pass the file written by"),
    ("latents-wrong-channels", sample_args, {"latents": latents_wrong_channels}, r"3-channel latents but the model takes 4"),
    ("latents-pickle", sample_args, {"latents": tuned_pickle}, r"not a readable \.safetensors"),
    # prompts
    ("prompt-nul", tune_args, {"prompt": "a\x00b"}, r"NUL character"),
    # special files: not regular files, and never opened (a FIFO would block)
    ("video-dev-zero", tune_args, {"video": "/dev/zero"}, r"video file '/dev/zero' is a character device, not a regular file"),
    ("video-fifo", tune_args, {"video": fifo}, r"video file .*pipe\.mp4' is a named pipe, not a regular file"),
    # latents fix the length and size: flags that contradict them are refused
    ("sample-latents-frames", sample_args, {"frames": 8}, r"--frames 8 contradicts --latents .*holds 3 frames at 64x64: drop --frames"),
    ("sample-latents-size", sample_args, {"width": 128, "height": 128, "frames": 8},
     r"--frames 8, --width 128, --height 128 contradict --latents .*3 frames at 64x64: drop --frames and --width and --height"),
    # the planner reads only a header: damaged files and the pack's own files are refused
    ("plan-model-empty", plan_args, {"model": sd_empty}, r"--model .*sd\.safetensors' is empty \(0 bytes\)"),
    ("plan-model-truncated", plan_args, {"model": sd_truncated}, r"--model .*sd\.safetensors is not a readable \.safetensors file.*truncated or damaged"),
    ("plan-model-tuned", plan_args, {"model": lambda env, tmp: env["tuned"]}, r"holds Tune-A-Video tuned weights \(format tav-tuned/1\), not a base model: plan the Stable Diffusion checkpoint"),
    ("plan-model-latents", plan_args, {"model": lambda env, tmp: env["latents"]}, r"holds Tune-A-Video inverted latents"),
    ("plan-model-lora", plan_args, {"model": safetensors_not_sd}, r"not a single-file Stable Diffusion checkpoint"),
    ("plan-model-dev-zero", plan_args, {"model": "/dev/zero"}, r"--model '/dev/zero' is a character device, not a regular file"),
    # official configs: the schema, checked before any work
    ("config-list-for-number", config_args, {"config": yaml_edit("n_sample_frames: 24", "n_sample_frames: [24, 25]")},
     r"config\.yaml: train_data\.n_sample_frames must be a whole number, got a list of 2"),
    ("config-missing-key", config_args, {"config": yaml_edit("  n_sample_frames: 24\n", "")},
     r"train_data\.n_sample_frames is missing: add it"),
    ("config-alias-bomb", config_args, {"config": yaml_bomb}, r"aliases expand to more than 10000 values \(an alias bomb\?\)"),
    ("config-python-tag", config_args, {"config": yaml_edit("seed: 33", "seed: !!python/object/apply:os.system ['touch PWNED']")},
     r"config\.yaml is not valid YAML at line \d+: could not determine a constructor for the tag .*python/object/apply"),
    ("config-prompts-string", config_args, {"config": yaml_edit(PROMPTS, '  prompts: "a cat is skiing"\n', regex=True)},
     r"validation_data\.prompts must be a list of strings, got one string: write it as a list"),
    ("config-prompts-empty", config_args, {"config": yaml_edit(PROMPTS, "  prompts: []\n", regex=True)},
     r"validation_data\.prompts is an empty list: nothing would be done"),
    ("config-not-yaml", config_args, {"config": yaml_edit("train_data:", "train_data: [")}, r"is not valid YAML at line \d+"),
    ("config-set-python-tag", config_args, {"config": lambda env, tmp: OFFICIAL, "set": "seed=!!python/name:os.system"},
     r"is not valid YAML.*python/name:os\.system"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "kw", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_refuses(env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, build, kw, expect) -> None:
    resolved = {k: (v(env, tmp_path) if callable(v) else v) for k, v in kw.items()}
    argv = build(env, tmp_path, **resolved)
    before = files_under(tmp_path)
    env_before = files_under(env["root"])
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and 'File "' not in err, err
    errors = [line for line in err.splitlines() if line.startswith(E)]
    assert len(errors) == 1, err
    assert re.search(expect, errors[0]), f"{errors[0]!r} does not match {expect!r}"
    assert files_under(tmp_path) == before, "a file was written or left behind"
    assert files_under(env["root"]) == env_before
    assert not (tmp_path / "in" / "PWNED").exists(), "a pickle payload ran"


def test_case_count() -> None:
    assert len(CASES) >= 60


def test_config_reports_every_problem_on_its_own_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = (
        OFFICIAL.read_text().replace("width: 512", "width: 500", 1).replace("guidance_scale: 12.5", "guidance_scale: x")
    )
    config = tmp_path / "c.yaml"
    config.write_text(text.replace("seed: 33", "seed: -1").replace('  prompt: "a man is skiing"\n', ""))
    assert main(["config", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith(E)]
    assert [re.sub(r"^error: .*c\.yaml: ", "", e) for e in errors] == [
        "train_data.prompt is missing: add it (every official config sets it, see official_examples/configs)",
        "validation_data.guidance_scale must be a number, got 'x'",
        "seed must be at least 0, got -1",
        "train_data.width must be a multiple of 8 (the VAE downsamples by 8), got 500",
    ], errors
    assert not (tmp_path / "out").exists()
