"""Every documented range at both ends (docs/reliability.md): each end runs, or is refused up front.

Long schedules run with the UNet replaced by a cheap stand-in (a 1000-step schedule is 2000 UNet
calls); everything else around it (CLI checks, schedule, VAE, writers) is the real code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tav import ddim
from tav.cli import main
from tav.inflation import inflate
from tav.tuning import TuneConfig, tune
from tav.validation import MAX_FRAMES, MAX_SIDE, MAX_STEPS, SEED_MAX
from tav.video_io import read_video, write_video
from tav.weights import load_latents
from tav.windows import Windows, fusion_weights

from .test_cli import moving_square, save_diffusers_folder
from .tiny import tiny_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_diffusers_folder(tmp_path_factory.mktemp("ranges_model"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ranges_clip") / "square.mp4"
    write_video(path, moving_square(2, 8), fps=8)
    return path


@pytest.fixture
def cheap_unet(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace the UNet call by a contraction (eps = 0.1 x); returns the timesteps it was asked for."""
    seen: list[int] = []

    def predict(pipe, x, t, embeds, control=None):  # noqa: ANN001, ANN202 - ddim.predict's signature
        seen.append(int(t))
        return 0.1 * x

    monkeypatch.setattr(ddim, "predict", predict)
    return seen


def _clip_args(model: Path, clip: Path) -> list[str]:
    return ["--model", str(model), "--video", str(clip), "--frames", "1", "--width", "8", "--height", "8"]


def test_cli_invert_and_sample_at_the_maximum_steps(
    model: Path, clip: Path, tmp_path: Path, cheap_unet: list[int], capsys: pytest.CaptureFixture
) -> None:
    """`--inversion-steps 1000` and `--sample-steps 1000` used to end in IndexError (t=1000) after all the work."""
    inv = tmp_path / "inv.safetensors"
    n = str(MAX_STEPS)
    assert main(["invert", *_clip_args(model, clip), "--inversion-steps", n, "--out", str(inv)]) == 0
    assert sorted(cheap_unet) == list(range(1000))  # every trained timestep once, upwards
    cheap_unet.clear()
    out = tmp_path / "out"
    argv = ["sample", "--model", str(model), "--latents", str(inv), "--prompt", "y", "--sample-steps", n]
    assert main([*argv, "--cfg", "1", "--out-dir", str(out)]) == 0
    assert cheap_unet == list(range(999, -1, -1))
    assert torch.isfinite(load_latents(inv)[0]).all()
    assert read_video(out / "00-y.mp4", n_frames=1, stride=1, resize="none").frames.shape == (1, 8, 8, 3)
    capsys.readouterr()


@pytest.mark.parametrize(
    "ends",
    [
        {"--cfg": "0", "--eta": "1", "--sample-seed": str(SEED_MAX), "--fps": "0.1"},
        {"--cfg": "100", "--eta": "0", "--sample-seed": "0", "--fps": "240"},
    ],
    ids=["low-ends", "high-ends"],
)
def test_cli_sample_at_the_ends_of_its_ranges(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture, ends: dict[str, str]
) -> None:
    """The real tiny model, 1 frame at the smallest size (8x8), each sampling number at one of its ends."""
    argv = ["sample", "--model", str(model), "--prompt", "y", "--frames", "1", "--width", "8", "--height", "8"]
    argv += ["--sample-steps", "1", "--out-dir", str(tmp_path)]
    assert main([*argv, *[x for kv in ends.items() for x in kv]]) == 0
    for ext in ("mp4", "gif"):
        back = read_video(tmp_path / f"00-y.{ext}", n_frames=1, stride=1, resize="none")
        assert back.frames.shape == (1, 8, 8, 3) and torch.isfinite(back.frames).all()
    capsys.readouterr()


def test_sampling_and_writing_at_the_maximum_frames(tmp_path: Path) -> None:
    """1024 frames (the maximum) through the real video UNet (temporal attention across all of them) and
    both writers; the VAE, frame by frame, is not range-specific and would take minutes here."""
    pipe = inflate(tiny_pipeline())
    out = ddim.sample(pipe, pipe.encode_prompt("y"), frames=MAX_FRAMES, height=8, width=8, steps=1)
    assert out.shape == (1, 4, MAX_FRAMES, 1, 1) and torch.isfinite(out).all()
    frames = out[0, :3].permute(1, 2, 3, 0).sigmoid().expand(-1, 8, 8, -1)
    for ext in (".mp4", ".gif"):
        back = read_video(write_video(tmp_path / f"v{ext}", frames, 240), n_frames=0, stride=1, resize="none")
        assert back.source_frames == MAX_FRAMES and back.frames.shape == (MAX_FRAMES, 8, 8, 3)


def test_cli_refuses_the_largest_size_up_front(
    model: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """4096x4096 is accepted as a size; a job that cannot fit the memory is refused before any model loads."""
    monkeypatch.setenv("TAV_MEMORY_BUDGET_GB", "4")
    argv = ["tune", "--model", str(model), "--video", str(clip), "--frames", "1", "--width", str(MAX_SIDE)]
    argv += ["--height", str(MAX_SIDE), "--prompt", "x", "--out", str(tmp_path / "t.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "needs at least about" in err and "would fit" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lr", [1e-10, 1e-8, 1e-2, 1.0])  # the CLI's and the Tune node's ends
def test_tuning_at_the_learning_rate_ends(lr: float) -> None:
    pipe = inflate(tiny_pipeline())
    latents = torch.randn(1, 4, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    cfg = TuneConfig(steps=1, lr=lr, seed=SEED_MAX)
    result = tune(pipe, latents, pipe.encode_prompt("x"), cfg)
    assert len(result.losses) == 1 and all(torch.isfinite(p).all() for p in result.pipeline.unet.parameters())


@pytest.mark.parametrize("ext", [".mp4", ".gif", ".webp"])
@pytest.mark.parametrize(("fps", "plays_at"), [(0.1, 0.1), (240.0, None)])
def test_writers_at_the_fps_ends(tmp_path: Path, ext: str, fps: float, plays_at: float | None) -> None:
    """0.1 fps is stored exactly; at 240 fps GIF's 1/100 s delays play at 50 fps and WebP's 1 ms ones at 250."""
    path = write_video(tmp_path / f"v{ext}", torch.rand(3, 8, 8, 3), fps)
    back = read_video(path, n_frames=0, stride=1, resize="none")
    want = plays_at or {".mp4": 240.0, ".gif": 50.0, ".webp": 250.0}[ext]
    assert back.source_frames == 3 and back.source_fps == pytest.approx(want)


@pytest.mark.parametrize(("window", "overlap"), [(2, 0), (2, 1), (1024, 1023)])
@pytest.mark.parametrize("frames", [2, 3, MAX_FRAMES])
def test_windows_at_the_widget_ends_cover_the_clip(window: int, overlap: int, frames: int) -> None:
    """The window/overlap widgets' ends split any clip length into full windows whose blend weights sum to 1."""
    windows = Windows(window, overlap)
    if window > frames:
        with pytest.raises(ValueError, match=f"at most {frames} frames"):
            windows.spans(frames)
        return
    spans = windows.spans(frames)
    assert spans[0][0] == 0 and spans[-1][1] == frames and all(b - a == window for a, b in spans)
    total = torch.zeros(frames)
    for (a, b), w in zip(spans, fusion_weights(spans, frames), strict=True):
        total[a:b] += w
    torch.testing.assert_close(total, torch.ones(frames))
