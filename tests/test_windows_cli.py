"""The CLI's --window/--overlap: a long clip edited with a model tuned on a window, bad settings, equivalence."""

import json
import shutil

import pytest

from tav import editing
from tav.cli import main
from tav.video_io import read_video, write_video
from tav.weights import load_latents, read_metadata

from .test_cli import CONFIGS, model, moving_square  # noqa: F401 - the tiny diffusers folder fixture


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "square.mp4"
    write_video(path, moving_square(6), fps=8)
    return path


def _common(model, video, frames: int = 6) -> list[str]:  # noqa: F811
    return ["--model", str(model), "--video", str(video), "--frames", str(frames), "--stride", "1"] + [
        "--width",
        "64",
        "--height",
        "64",
    ]


def test_edit_long_clip_tunes_on_a_window_and_edits_every_frame(model, long_video, tmp_path, capsys, monkeypatch):  # noqa: F811
    tuned_frames = []
    real_tune = editing.tune

    def spy(pipe, latents, *args, **kwargs):
        tuned_frames.append(latents.shape[2])
        return real_tune(pipe, latents, *args, **kwargs)

    monkeypatch.setattr(editing, "tune", spy)
    out = tmp_path / "edit"
    args = ["edit", *_common(model, long_video), "--prompt", "a red square", "--edit", "a green square"]
    args += ["--steps", "1", "--inversion-steps", "2", "--sample-steps", "2", "--out-dir", str(out)]
    assert main([*args, "--window", "4", "--overlap", "1"]) == 0
    assert tuned_frames == [4]  # a window-sized subsample
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"]
    mp4 = next(p for p in written if p.endswith(".mp4"))
    assert read_video(mp4, n_frames=0, stride=1, resize="none").frames.shape[0] == 6  # the whole clip


def test_invert_with_one_window_as_long_as_the_clip_is_unchanged(model, long_video, tmp_path, capsys):  # noqa: F811
    common = [*_common(model, long_video, frames=4), "--inversion-steps", "2"]
    assert main(["invert", *common, "--out", str(tmp_path / "a.safetensors")]) == 0
    assert main(["invert", *common, "--window", "4", "--overlap", "1", "--out", str(tmp_path / "b.safetensors")]) == 0
    a, _ = load_latents(tmp_path / "a.safetensors")
    b, _ = load_latents(tmp_path / "b.safetensors")
    assert a.equal(b)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--window", "1"], "window must be at least 2"),
        (["--window", "3", "--overlap", "3"], "overlap must be at least 0 and smaller than the window (3)"),
        (["--window", "9"], "window (9 frames) is longer than the clip (6 frames)"),
        (["--overlap", "2"], "--overlap needs --window"),
    ],
)
def test_bad_window_settings_are_one_line_errors(model, long_video, tmp_path, capsys, extra, message):  # noqa: F811
    args = ["edit", *_common(model, long_video), "--prompt", "a red square", "--edit", "a green square"]
    assert main([*args, "--out-dir", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing was written: it failed before any work


def test_official_config_on_the_whole_clip(model, tmp_path, capsys):  # noqa: F811
    """man-skiing.yaml tuned on 4 frames, edited on every 16th frame of the whole clip (6) in windows of 4."""
    cfg_path = tmp_path / "configs" / "man-skiing.yaml"
    cfg_path.parent.mkdir()
    shutil.copy(CONFIGS / "man-skiing.yaml", cfg_path)
    sets = ["max_train_steps=1", "train_data.n_sample_frames=4", "validation_data.video_length=4"]
    sets += ["train_data.sample_frame_rate=16", "train_data.width=64", "train_data.height=64"]
    sets += ["validation_data.num_inference_steps=2", "validation_data.num_inv_steps=2"]
    sets += ['validation_data.prompts=["a man is skiing"]']
    args = ["config", str(cfg_path), "--pretrained", str(model), "--video-dir", str(CONFIGS.parent / "videos")]
    args += ["--output-dir", str(tmp_path / "out"), "--device", "cpu", "--whole-clip-overlap", "2", "--set", *sets]
    assert main(args) == 0, capsys.readouterr().err
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"]
    assert read_video(written[0], n_frames=0, stride=1, resize="none").frames.shape[0] == 6
    assert read_metadata(written[-1])["frames"] == "4"  # tuned on a window-sized subsample
