"""``python -m tav score`` and ``python -m tav config --score-clip`` end to end on the CPU with a tiny CLIP."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tav import metrics
from tav.cli import main
from tav.clip_scoring import load_clip
from tav.score_files import read_frames
from tav.video_io import write_video

from .test_cli import CONFIGS, moving_square, save_diffusers_folder
from .tiny_clip import make_tiny_clip

PROMPT = "a red square on a white background"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    edit = moving_square(6)
    edit[..., 1] = 0.5  # another colour: an "edit" of the source
    return {
        "source": write_video(d / "source.mp4", moving_square(6), fps=8),
        "edit": write_video(d / "edit.mp4", edit, fps=8),
        "short": write_video(d / "short.mp4", moving_square(4), fps=8),
    }


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_score_prints_json_writes_the_plot_and_matches_the_library(clip_dir, videos, tmp_path, capsys) -> None:
    plot = tmp_path / "plots" / "edit.png"
    code, out, err = _run(
        capsys, "score", str(videos["edit"]), "--clip", str(clip_dir), "--prompt", PROMPT,
        "--source", str(videos["source"]), "--plot", str(plot), "--json", "--device", "cpu", "--batch-size", "4",
    )  # fmt: skip
    assert code == 0, err
    got = json.loads(out)
    assert got["plot"] == str(plot.resolve())
    img = np.asarray(Image.open(plot))
    assert img.ndim == 3 and img.shape[2] == 3
    want = metrics.score_edit(
        load_clip(str(clip_dir), torch.device("cpu")),
        read_frames(str(videos["edit"])),
        PROMPT,
        read_frames(str(videos["source"])),
    )
    for key in ("frame_consistency", "frame_consistency_consecutive", "text_alignment", "pickscore"):
        assert got["edit"][key] == pytest.approx(getattr(want.edit, key), abs=1e-6), key
        assert got["source"][key] == pytest.approx(getattr(want.source, key), abs=1e-6), key
    assert len(got["edit"]["alignment_per_frame"]) == 6 and got["prompt"] == PROMPT
    assert got["model"] == "tiny-clip"


def test_score_prints_readable_numbers(clip_dir, videos, capsys) -> None:
    code, out, err = _run(capsys, "score", str(videos["edit"]), "--clip", str(clip_dir), "--prompt", PROMPT,
                          "--frames", "3", "--stride", "2", "--device", "cpu", "--precision", "bf16")  # fmt: skip
    assert code == 0, err
    assert "frames: 3" in out and "frame consistency (all pairs):" in out and "paper's Tab. 1 scale" in out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-clip", r"CLIP model folder not found"),
        ("not-a-clip", r"holds a 'clip_text_model' model, not a CLIPModel"),
        ("frame-mismatch", r"source clip has 4 frames but the edit has 6"),
        ("missing-video", r"video file .*does not exist|not found|no such"),
        ("plot-ext", r"--plot"),
        ("empty-prompt", r"prompt to score against is empty"),
    ],
)
def test_score_errors_are_one_line(clip_dir, videos, tmp_path, capsys, case, message) -> None:
    args = {"video": str(videos["edit"]), "--clip": str(clip_dir), "--prompt": PROMPT}
    if case == "missing-clip":
        args["--clip"] = str(tmp_path / "nope")
    elif case == "not-a-clip":
        text = tmp_path / "text"
        from transformers import CLIPTextModel

        from .tiny_clip import tiny_clip_model

        CLIPTextModel(tiny_clip_model().config.text_config).save_pretrained(text)
        args["--clip"] = str(text)
    elif case == "frame-mismatch":
        args["--source"] = str(videos["short"])
    elif case == "missing-video":
        args["video"] = str(tmp_path / "nope.mp4")
    elif case == "plot-ext":
        args["--plot"] = str(tmp_path / "plot.jpg")
    elif case == "empty-prompt":
        args["--prompt"] = " "
    argv = ["score", args.pop("video"), "--device", "cpu"] + [x for kv in args.items() for x in kv]
    code, out, err = _run(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert re.search(message, lines[0], re.I), lines[0]
    assert "Traceback" not in err and not out


def test_config_scores_every_edit(clip_dir, tmp_path, capsys) -> None:
    cfg = tmp_path / "configs" / "man-skiing.yaml"
    cfg.parent.mkdir()
    shutil.copy(CONFIGS / "man-skiing.yaml", cfg)
    model = save_diffusers_folder(tmp_path / "model")
    out_dir = tmp_path / "out"
    common = [
        "config", str(cfg), "--pretrained", str(model), "--video-dir", str(CONFIGS.parent / "videos"),
        "--output-dir", str(out_dir), "--device", "cpu", "--set", "max_train_steps=1", "train_data.n_sample_frames=2",
        "validation_data.video_length=2", "train_data.width=64", "train_data.height=64",
        "validation_data.num_inference_steps=2", "validation_data.num_inv_steps=2",
    ]  # fmt: skip
    # a wrong folder fails before any tuning: nothing is written
    code, _, err = _run(capsys, *common, "--score-clip", str(tmp_path / "nope"))
    assert code == 2 and "CLIP model folder not found" in err and not out_dir.exists()
    code, out, err = _run(capsys, *common, "--score-clip", str(clip_dir))
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    prompts = [s["prompt"] for s in result["scores"]]
    assert len(prompts) == 4 and prompts[0] == "mickey mouse is skiing on the snow"
    saved = json.loads((out_dir / "samples" / "scores.json").read_text())
    assert saved == result["scores"]
    plots = sorted((out_dir / "samples").glob("*-scores.png"))
    assert len(plots) == 4 and str(out_dir / "samples" / "scores.json") in result["written"]
    for s in saved:
        assert len(s["edit"]["alignment_per_frame"]) == 2 and s["source"] is not None
