"""Library-level reliability: approximate requests warn, garbage stops the job, writes are atomic
with the umask's permissions and survive a full disk, and Ctrl-C in the CLI is one clean line."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tav import ddim, video_io, weights
from tav.atomic import WriteError
from tav.cli import main
from tav.inflation import inflate
from tav.job_size import check_job_size, estimate_job_bytes
from tav.tuning import TuneConfig, tune
from tav.validation import InputError, NonFiniteError, TavWarning
from tav.video_io import read_video, write_video

from .bad_inputs import files_under, fill_disk, small_disk
from .test_cli import moving_square, save_diffusers_folder
from .tiny import tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe():
    return inflate(tiny_pipeline())


@pytest.fixture(scope="module")
def clip6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "square.mp4"
    write_video(path, moving_square(6), fps=8)
    return path


def _poison(module: torch.nn.Module, name: str) -> None:
    with torch.no_grad():
        dict(module.named_parameters())[name].view(-1)[0] = float("nan")


# --- requests that cannot be met exactly -----------------------------------------------------------


def test_short_clip_warns_with_the_fix(clip6: Path) -> None:
    with pytest.warns(
        TavWarning,
        match=r"asked for 10 frames but .* has 6: .* give only 6; .*at most 6 frames or use a longer clip to get 10",
    ):
        clip = read_video(clip6, n_frames=10, stride=1, width=64, height=64)
    assert clip.frames.shape[0] == 6


def test_stride_past_end_and_still_image_are_errors(clip6: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"reach only 1 frame of the 6 .*use stride 1 or less$"):
        read_video(clip6, n_frames=4, stride=10, width=64, height=64)
    from .bad_inputs import png_as_mp4

    still = png_as_mp4(tmp_path / "still.mp4")
    with pytest.raises(ValueError, match="still image, not a video"):
        read_video(still, n_frames=4, width=64, height=64)
    assert read_video(still, n_frames=1, width=64, height=64).frames.shape[0] == 1  # one frame asked: fine


def test_long_prompt_warns_naming_the_dropped_words(pipe) -> None:
    prompt = "a red square " * 30 + "THE_END"
    with pytest.warns(TavWarning, match=r"prompt is \d+ tokens but the text encoder reads 75: ignored the end .*end"):
        pipe.encode_prompt(prompt)


def test_cli_prints_warnings_as_one_line(clip6: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = save_diffusers_folder(tmp_path / "model")
    out = tmp_path / "t.safetensors"
    argv = ["tune", "--model", str(model), "--video", str(clip6), "--frames", "8", "--stride", "1"]
    argv += ["--width", "64", "--height", "64", "--steps", "1", "--prompt", "x", "--out", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    warns = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warns) == 1 and "asked for 8 frames" in warns[0], err
    assert "TavWarning" not in err and out.is_file()


# --- garbage never reported as success -------------------------------------------------------------


def test_tuning_loss_nan_stops(pipe) -> None:
    bad = pipe.replace(unet=_clone_unet(pipe.unet))
    _poison(bad.unet, "unet.conv_out.weight")
    latents = torch.randn(1, 4, 2, 8, 8)
    with pytest.raises(
        NonFiniteError, match=r"tuning diverged: the loss became nan at step 1 of 3; lower the learning"
    ):
        tune(bad, latents, pipe.encode_prompt("x"), TuneConfig(steps=3))


def test_sampling_nan_stops(pipe) -> None:
    bad = pipe.replace(unet=_clone_unet(pipe.unet))
    _poison(bad.unet, "unet.conv_out.weight")
    with pytest.raises(NonFiniteError, match=r"sampling produced NaN/infinite values at step 1 of 2"):
        ddim.sample(bad, pipe.encode_prompt("x"), frames=2, height=64, width=64, steps=2)
    with pytest.raises(NonFiniteError, match=r"DDIM inversion produced NaN/infinite values at step 1"):
        ddim.invert(bad, torch.randn(1, 4, 2, 8, 8), steps=2)


def test_sampling_settings_and_latents_checked(pipe) -> None:
    emb = pipe.encode_prompt("x")
    with pytest.raises(InputError, match=r"guidance scale \(cfg\) must be a finite number"):
        ddim.sample(pipe, emb, frames=2, height=64, width=64, steps=2, guidance_scale=float("nan"))
    with pytest.raises(InputError, match=r"eta must be at most 1"):
        ddim.sample(pipe, emb, frames=2, height=64, width=64, steps=2, eta=2.0)
    with pytest.raises(InputError, match=r"seed must be at most"):
        ddim.sample(pipe, emb, frames=2, height=64, width=64, steps=2, seed=2**64)
    lat = torch.zeros(1, 4, 2, 8, 8)
    lat[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="the starting latents holds NaN"):
        ddim.sample(pipe, emb, latents=lat, steps=2)


def test_decode_and_encode_refuse_nan(pipe) -> None:
    frames = torch.rand(2, 64, 64, 3)
    frames[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="the input frames holds NaN"):
        pipe.encode_video(frames)
    import copy

    bad_vae = copy.deepcopy(pipe.vae)
    _poison(bad_vae, "decoder.conv_out.weight")
    with pytest.raises(NonFiniteError, match="VAE-decoded frames holds NaN.*use fp32"):
        pipe.replace(vae=bad_vae).decode_latents(torch.zeros(1, 4, 2, 8, 8))


def test_writers_refuse_garbage(pipe, tmp_path: Path) -> None:
    frames = torch.rand(2, 64, 64, 3)
    frames[1, 3, 3, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="frames to write hold"):
        write_video(tmp_path / "x.mp4", frames, 8)
    bad = pipe.replace(unet=_clone_unet(pipe.unet))
    _poison(bad.unet, "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_q.weight")
    with pytest.raises(NonFiniteError, match="tuned model: tensor .*attn_temp.* holds NaN.*nothing was saved"):
        weights.save_tuned(tmp_path / "t.safetensors", bad)
    assert files_under(tmp_path) == set()


def _clone_unet(unet: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(unet)


# --- job size --------------------------------------------------------------------------------------


def test_job_size_refusal_says_what_fits() -> None:
    need = estimate_job_bytes(24, 512, 512, kind="sample", weight_bytes=2 * 2**30)
    check_job_size(24, 512, 512, kind="sample", weight_bytes=2 * 2**30, budget=need)  # exactly fits
    with pytest.raises(
        InputError,
        match=r"needs at least about .* GiB, but only 4\.0 GiB .*up to \d+ frame\(s\); 24 frames at up to \d+x\d+",
    ):
        check_job_size(24, 512, 512, kind="sample", weight_bytes=2 * 2**30, budget=4 * 2**30)
    msg = ""
    try:
        check_job_size(24, 512, 512, kind="sample", weight_bytes=2 * 2**30, budget=4 * 2**30)
    except InputError as e:
        msg = str(e)
    frames = int(msg.split("up to ")[1].split(" frame")[0])
    assert estimate_job_bytes(frames, 512, 512, kind="sample", weight_bytes=2 * 2**30) <= 4 * 2**30
    assert estimate_job_bytes(frames + 1, 512, 512, kind="sample", weight_bytes=2 * 2**30) > 4 * 2**30


def test_read_video_refuses_a_decode_that_cannot_fit(clip6: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAV_MEMORY_BUDGET_GB", "1")
    with pytest.raises(InputError, match=r"24 frames at 4096x4096, load.*would fit: at 4096x4096 up to 2 frame"):
        read_video(clip6, n_frames=24, stride=1, width=4096, height=4096)


def test_decode_checks_for_cancel_every_frame(clip6: Path) -> None:
    calls: list[tuple[int, int]] = []

    def cancel(step: int, total: int) -> None:
        calls.append((step, total))
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        read_video(clip6, n_frames=6, stride=1, width=64, height=64, callback=cancel)
    assert calls == [(1, 6), (2, 6)]


# --- permissions and full disks ---------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(pipe, tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        weights.save_latents(tmp_path / "l.safetensors", torch.zeros(1, 4, 2, 8, 8))
        weights.save_tuned(tmp_path / "t.safetensors", pipe)
        write_video(tmp_path / "v.mp4", torch.rand(2, 16, 16, 3), 8)
        write_video(tmp_path / "v.gif", torch.rand(2, 16, 16, 3), 8)
    finally:
        os.umask(old)
    for name in ("l.safetensors", "t.safetensors", "v.mp4", "v.gif"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
    assert sorted(files_under(tmp_path)) == ["l.safetensors", "t.safetensors", "v.gif", "v.mp4"]


def _enospc_after_half(real):  # noqa: ANN001, ANN202
    def writer(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        data = args[0] if args and isinstance(args[0], bytes) else b"x" * 4096
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    return writer


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory, clip6: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("enospc")
    model = save_diffusers_folder(root / "model")
    common = ["--model", str(model), "--video", str(clip6), "--frames", "2", "--stride", "1"]
    common += ["--width", "64", "--height", "64"]
    tuned = root / "tuned.safetensors"
    assert main(["tune", *common, "--prompt", "x", "--steps", "1", "--out", str(tuned)]) == 0
    return {"model": model, "common": common, "tuned": tuned}


@pytest.mark.parametrize("command", ["tune", "invert", "sample", "edit-save-tuned"])
def test_cli_full_disk_keeps_existing_file(
    cli_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, command: str
) -> None:
    common, out_dir = cli_env["common"], tmp_path / "out"
    out_dir.mkdir()
    if command == "tune":
        target = out_dir / "t.safetensors"
        argv = ["tune", *common, "--prompt", "x", "--steps", "1", "--out", str(target)]
    elif command == "invert":
        target = out_dir / "inv.safetensors"
        argv = ["invert", *common, "--tuned", str(cli_env["tuned"]), "--inversion-steps", "1", "--out", str(target)]
    elif command == "sample":
        target = out_dir / "00-y.mp4"
        argv = ["sample", "--model", str(cli_env["model"]), "--tuned", str(cli_env["tuned"]), "--prompt", "y"]
        argv += ["--frames", "2", "--width", "64", "--height", "64", "--sample-steps", "1", "--out-dir", str(out_dir)]
    else:
        target = out_dir / "t.safetensors"
        argv = ["edit", *common, "--prompt", "x", "--edit", "y", "--steps", "1", "--inversion-steps", "1"]
        argv += ["--sample-steps", "1", "--out-dir", str(tmp_path / "videos"), "--save-tuned", str(target)]
    target.write_bytes(b"EXISTING")
    monkeypatch.setattr(weights, "_write_file", _enospc_after_half(weights._write_file))
    monkeypatch.setitem(video_io._WRITERS, ".mp4", _enospc_after_half(None))
    before = files_under(out_dir)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(line) == 1 and "disk is full" in line[0] and str(target.name) in line[0], err
    assert target.read_bytes() == b"EXISTING"
    assert files_under(out_dir) == before, "a partial or temp file was left behind"


@pytest.mark.parametrize("output", ["tuned", "latents", "mp4", "gif"])
def test_cli_on_a_really_full_disk(cli_env, tmp_path: Path, capsys: pytest.CaptureFixture, output: str) -> None:
    """Every CLI writer against a real full disk (a small tmpfs, no mocks): exit 2, one line naming the
    file, the old file of that name intact, no temp file. For the gif the disk keeps room for the mp4
    written before it, so it is the gif that meets the full disk."""
    common = cli_env["common"]
    with small_disk(tmp_path / "disk") as disk:
        if output == "tuned":
            target = disk / "t.safetensors"
            argv = ["tune", *common, "--prompt", "x", "--steps", "1", "--out", str(target)]
        elif output == "latents":
            target = disk / "inv.safetensors"
            argv = ["invert", *common, "--tuned", str(cli_env["tuned"]), "--inversion-steps", "1", "--out", str(target)]
        else:
            target = disk / f"00-y.{output}"
            argv = ["sample", "--model", str(cli_env["model"]), "--tuned", str(cli_env["tuned"]), "--prompt", "y"]
            argv += ["--frames", "2", "--width", "64", "--height", "64", "--sample-steps", "1", "--out-dir", str(disk)]
        leave_kib = 0
        if output == "gif":  # room for this run's mp4 (deterministic), not for its gif
            assert main(argv) == 0
            mp4, gif = (disk / "00-y.mp4").stat().st_size, target.stat().st_size
            leave_kib = 4 * -(-mp4 // 4096)
            assert gif > leave_kib * 1024, "the gif must not fit where the mp4 does"
            (disk / "00-y.mp4").unlink()
        target.write_bytes(b"EXISTING")
        fill_disk(disk, leave_kib)
        before = files_under(disk) | ({"00-y.mp4"} if output == "gif" else set())
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        line = [x for x in err.splitlines() if x.startswith("error: ")]
        assert line == [f"error: could not write {str(target)!r}: {FULL}"], err
        assert target.read_bytes() == b"EXISTING"
        assert files_under(disk) == before, "a partial or temp file was left behind"


FULL = "the disk is full (no space left on device); free some space or choose another folder"


@pytest.mark.parametrize("kind", ["tuned", "latents"])
def test_weights_writers_read_back_what_they_wrote(
    pipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A write that silently stops half way (no error raised) is caught before it replaces the old file."""
    target = tmp_path / f"{kind}.safetensors"
    target.write_bytes(b"EXISTING")
    real = weights._write_file
    monkeypatch.setattr(weights, "_write_file", lambda path, data: real(path, data[: len(data) // 2]))
    with pytest.raises(WriteError, match=r"does not read back \(\d+ of \d+ bytes on disk\)") as info:
        if kind == "tuned":
            weights.save_tuned(target, pipe)
        else:
            weights.save_latents(target, torch.zeros(1, 4, 2, 8, 8))
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"EXISTING"
    assert files_under(tmp_path) == {target.name}


# --- Ctrl-C -----------------------------------------------------------------------------------------


def _run_and_interrupt(argv: list[str], tmp: Path, ready: str | None, delay: float) -> tuple[int, str]:
    err_path = tmp / "stderr.txt"
    with open(err_path, "wb") as err:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "tav", *argv], stderr=err, stdout=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 120
        if ready:
            while ready not in err_path.read_text(errors="replace") and time.monotonic() < deadline:
                assert proc.poll() is None, err_path.read_text()
                time.sleep(0.1)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    return code, err_path.read_text(errors="replace")


@pytest.mark.parametrize("when", ["importing", "tuning"])
def test_ctrl_c_is_one_line(cli_env, tmp_path: Path, when: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    argv = ["tune", *cli_env["common"], "--prompt", "x", "--steps", "100000", "--out", str(out / "t.safetensors")]
    if when == "importing":
        code, err = _run_and_interrupt(argv, tmp_path, None, 1.0)
        assert "tune:" not in err  # it really was interrupted before the work started
    else:
        code, err = _run_and_interrupt(argv, tmp_path, "tune:", 0.5)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last == "interrupted", err
    assert files_under(out) == set()


# --- pickles in the library's other weight readers ---------------------------------------------------


@pytest.mark.parametrize("layout", ["pth-file", "tav-unet-bin", "sharded-bin", "config-pretrained"])
def test_pickle_payload_never_runs(tmp_path: Path, layout: str) -> None:
    import json

    from tav.checkpoints import CheckpointError, load_pipeline, load_unet_state_dict, read_state_dict
    from tav.reference_config import run_reference_config

    from .bad_inputs import evil_pickle

    marker = tmp_path / "PWNED"
    with pytest.raises(CheckpointError, match=r"refused to load .*only read with torch\.load\(weights_only=True\)"):
        if layout == "pth-file":
            read_state_dict(evil_pickle(tmp_path / "w.pth", marker))
        elif layout == "tav-unet-bin":
            unet = tmp_path / "tav" / "unet"
            evil_pickle(unet / "diffusion_pytorch_model.bin", marker)
            (unet / "config.json").write_text(json.dumps({"_class_name": "UNet3DConditionModel"}))
            load_unet_state_dict(tmp_path / "tav")
        elif layout == "sharded-bin":
            unet = tmp_path / "sharded" / "unet"
            evil_pickle(unet / "diffusion_pytorch_model-00001-of-00001.bin", marker)
            index = {"weight_map": {"w": "diffusion_pytorch_model-00001-of-00001.bin"}}
            (unet / "diffusion_pytorch_model.bin.index.json").write_text(json.dumps(index))
            load_unet_state_dict(tmp_path / "sharded")
        else:
            evil_pickle(tmp_path / "model.ckpt", marker)
            cfg = ROOT / "official_examples" / "configs" / "man-skiing.yaml"
            small = {"train_data.n_sample_frames": "2", "validation_data.video_length": "2", "train_data.width": "64",
                     "train_data.height": "64"}  # fmt: skip
            run_reference_config(
                cfg, pretrained=str(tmp_path / "model.ckpt"), output_dir=str(tmp_path / "out"), overrides=small
            )
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load"):
        load_pipeline(evil_pickle(tmp_path / "m.bin", marker))
    assert not marker.exists()
