"""The CLI end to end on a tiny diffusers folder: tune -> invert -> sample, edit, official configs."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from tav.cli import main
from tav.reference_config import edit_config, load_reference_config
from tav.video_io import read_video, write_video
from tav.weights import load_latents, read_metadata

from .tiny import tiny_pipeline

CONFIGS = Path(__file__).resolve().parents[1] / "official_examples" / "configs"


def save_diffusers_folder(folder: Path, seed: int = 0) -> Path:
    pipe = tiny_pipeline(seed=seed)
    pipe.unet.save_pretrained(folder / "unet")
    pipe.vae.save_pretrained(folder / "vae")
    pipe.text_encoder.save_pretrained(folder / "text_encoder")
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(pipe.scheduler_config))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def moving_square(frames: int = 6, size: int = 64) -> torch.Tensor:
    video = torch.ones(frames, size, size, 3)
    for i in range(frames):
        x = 8 + 6 * i
        video[i, 20:40, x : x + 20] = torch.tensor([1.0, 0.1, 0.1])
    return video


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_diffusers_folder(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    write_video(path, moving_square(), fps=8)
    return path


@pytest.mark.parametrize(
    ("norm", "attention"),
    [("frame", "sparse_causal"), ("video", "sparse_causal_self")],
    ids=["frame-norm", "self-keys"],
)
def test_tune_invert_sample(model, video, tmp_path, capsys, norm, attention) -> None:
    keys = ["--norm", norm, "--attention", attention]
    common = [
        "--model",
        str(model),
        "--video",
        str(video),
        "--frames",
        "3",
        "--stride",
        "2",
        "--width",
        "64",
        "--height",
        "64",
    ]
    tuned = tmp_path / "tuned.safetensors"
    assert main(["tune", *common, "--prompt", "a red square", "--steps", "2", *keys, "--out", str(tuned)]) == 0
    meta = read_metadata(tuned)
    assert (meta["frames"], meta["height"], meta["width"], meta["prompt"]) == ("3", "64", "64", "a red square")
    assert (meta["norm"], meta["attention"]) == (norm, attention)  # invert/sample below rebuild the model from this
    inv = tmp_path / "inv.safetensors"
    assert main(["invert", *common, "--tuned", str(tuned), "--inversion-steps", "3", "--out", str(inv)]) == 0
    latents, _ = load_latents(inv)
    assert latents.shape == (1, 4, 3, 8, 8)
    out = tmp_path / "out"
    assert (
        main(
            [
                "sample",
                "--model",
                str(model),
                "--tuned",
                str(tuned),
                "--latents",
                str(inv),
                "--prompt",
                "a blue square",
                "a red circle",
                "--sample-steps",
                "3",
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    files = sorted(p.name for p in out.iterdir())
    assert files == ["00-a_blue_square.gif", "00-a_blue_square.mp4", "01-a_red_circle.gif", "01-a_red_circle.mp4"]
    clip = read_video(out / "00-a_blue_square.mp4", n_frames=0, stride=1, resize="none")
    assert clip.frames.shape == (3, 64, 64, 3)
    capsys.readouterr()


def test_edit_one_go(model, video, tmp_path, capsys) -> None:
    out = tmp_path / "edit"
    code = main(
        [
            "edit",
            "--model",
            str(model),
            "--video",
            str(video),
            "--frames",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--prompt",
            "a red square",
            "--edit",
            "a green square",
            "--steps",
            "1",
            "--inversion-steps",
            "2",
            "--sample-steps",
            "2",
            "--out-dir",
            str(out),
            "--save-tuned",
            str(tmp_path / "t.safetensors"),
            "--attention",
            "sparse_causal_self",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(report["written"]) == 2
    assert read_metadata(tmp_path / "t.safetensors")["attention"] == "sparse_causal_self"


def test_errors_are_one_line_not_tracebacks(model, tmp_path, capsys) -> None:
    code = main(
        [
            "edit",
            "--model",
            str(model),
            "--video",
            str(tmp_path / "missing.mp4"),
            "--prompt",
            "x",
            "--edit",
            "y",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "missing.mp4" in capsys.readouterr().err
    write_video(tmp_path / "v.mp4", moving_square(2), fps=8)
    code = main(
        [
            "tune",
            "--model",
            str(tmp_path / "nomodel"),
            "--video",
            str(tmp_path / "v.mp4"),
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "o.safetensors"),
        ]
    )
    assert code == 2 and "not found" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["car-turn", "man-skiing", "man-surfing", "rabbit-watermelon"])
def test_official_configs_map_unchanged(name: str) -> None:
    cfg = load_reference_config(CONFIGS / f"{name}.yaml")
    ec = edit_config(cfg)
    assert ec.tune.steps == 500 and ec.tune.lr == 3e-5 and ec.tune.seed == 33
    assert tuple(ec.tune.trainable_modules) == ("attn1.to_q", "attn2.to_q", "attn_temp")
    assert ec.guidance_scale == 12.5 and ec.steps == 50 and ec.inversion_steps == 50 and ec.use_inversion
    assert len(cfg["validation_data"]["prompts"]) == 4


def test_official_config_runs_with_local_model(model, tmp_path, capsys) -> None:
    """man-skiing.yaml as shipped; only the model path and smoke-size overrides change."""
    cfg_path = tmp_path / "configs" / "man-skiing.yaml"
    cfg_path.parent.mkdir()
    shutil.copy(CONFIGS / "man-skiing.yaml", cfg_path)
    code = main(
        [
            "config",
            str(cfg_path),
            "--pretrained",
            str(model),
            "--video-dir",
            str(CONFIGS.parent / "videos"),
            "--output-dir",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--set",
            "max_train_steps=1",
            "train_data.n_sample_frames=2",
            "validation_data.video_length=2",
            "train_data.width=64",
            "train_data.height=64",
            "validation_data.num_inference_steps=2",
            "validation_data.num_inv_steps=2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"]
    assert len(written) == 5 and written[-1].endswith("tuned.safetensors")
    assert read_metadata(written[-1])["prompt"] == "a man is skiing"
    with pytest.raises(ValueError, match="no key"):
        load_reference_config(cfg_path, {"train_data.nope": "1"})
