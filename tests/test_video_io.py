"""tav.video_io: reading the reference clips, frame selection, resizing, writing, atomicity."""

from __future__ import annotations

import os
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from tav import video_io
from tav.atomic import WriteError
from tav.validation import TavWarning
from tav.video_io import frames_to_uint8, read_video, side_by_side, write_video

from .bad_inputs import files_under, fill_disk, small_disk

VIDEOS = Path(__file__).resolve().parents[1] / "official_examples" / "videos"

# Measured with imageio_ffmpeg (count_frames_and_secs + read_frames metadata).
REFERENCE = {  # name: (frames, fps, (width, height))
    "car-turn": (80, 10.0, (480, 480)),
    "man-skiing": (91, 29.97, (718, 718)),
    "man-surfing": (72, 24.0, (656, 656)),
    "rabbit-watermelon": (186, 30.0, (718, 718)),
}

# the clips ship in the repository: missing clips are a failure, not a skip
needs_videos = pytest.mark.usefixtures("reference_videos")


@pytest.fixture(scope="session")
def reference_videos() -> Path:
    assert VIDEOS.is_dir(), f"reference clips not found at {VIDEOS}"
    return VIDEOS


def _clip(name: str) -> str:
    return str(VIDEOS / f"{name}.mp4")


@pytest.fixture(scope="module")
def full_reads() -> dict[str, video_io.VideoClip]:
    """Every frame of every reference clip at 32x32, decoded once for the whole module."""
    return {name: read_video(_clip(name), n_frames=0, stride=1, width=32, height=32) for name in REFERENCE}


def _moving_frames(n: int = 6, h: int = 32, w: int = 48) -> np.ndarray:
    """Smooth gradients with a moving bright square: compressible yet distinct per frame."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(n):
        f = np.stack([x / w, y / h, np.full_like(x, i / n)], axis=-1)
        f[4:12, 4 + 4 * i : 12 + 4 * i] = 1.0
        frames.append(f)
    return (np.stack(frames) * 255).round().astype(np.uint8)


# --- reading the reference clips -----------------------------------------------------------------


@needs_videos
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_clip_counts_match_ffmpeg(name: str, full_reads: dict) -> None:
    frames, fps, size = REFERENCE[name]
    counted, _secs = imageio_ffmpeg.count_frames_and_secs(_clip(name))
    reader = imageio_ffmpeg.read_frames(_clip(name))
    meta = next(reader)
    reader.close()
    assert (counted, meta["fps"], meta["size"]) == (frames, fps, size)
    clip = full_reads[name]
    assert clip.frames.shape == (frames, 32, 32, 3)  # decoded every frame: agrees with the count
    assert clip.source_frames == frames
    assert clip.source_fps == pytest.approx(fps)
    assert clip.fps == pytest.approx(fps)
    assert clip.path == _clip(name)


@needs_videos
def test_sample_selects_reference_indices(full_reads: dict) -> None:
    clip = read_video(_clip("man-skiing"), n_frames=8, start=3, stride=2, width=32, height=32)
    assert clip.frames.shape == (8, 32, 32, 3)
    assert clip.frames.dtype == torch.float32
    assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0
    assert clip.fps == pytest.approx(29.97 / 2)
    assert clip.source_fps == pytest.approx(29.97) and clip.source_frames == 91
    expected = full_reads["man-skiing"].frames[list(range(3, 91, 2))[:8]]
    assert torch.equal(clip.frames, expected)


@needs_videos
def test_stops_decoding_at_last_needed_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    consumed = []
    real = imageio_ffmpeg.read_frames

    def counting(*args, **kwargs):
        gen = real(*args, **kwargs)
        yield next(gen)
        for raw in gen:
            consumed.append(1)
            yield raw

    monkeypatch.setattr(imageio_ffmpeg, "read_frames", counting)
    clip = read_video(_clip("rabbit-watermelon"), n_frames=8, stride=2, width=64, height=64)
    assert clip.frames.shape == (8, 64, 64, 3)
    assert len(consumed) == 15  # frames 0..14, not all 186
    assert clip.source_frames == 186


@needs_videos
def test_more_frames_than_available_returns_what_exists(full_reads: dict) -> None:
    with pytest.warns(TavWarning, match="give only 5; continuing with 5 frames"):
        clip = read_video(_clip("car-turn"), n_frames=24, start=70, stride=2, width=32, height=32)
    assert clip.frames.shape[0] == 5  # 70, 72, 74, 76, 78
    assert torch.equal(clip.frames, full_reads["car-turn"].frames[70::2])
    assert read_video(_clip("car-turn"), n_frames=1, start=79, width=32, height=32).frames.shape[0] == 1


@needs_videos
def test_all_frames_with_stride() -> None:
    clip = read_video(_clip("car-turn"), n_frames=-1, stride=3, width=16, height=16)
    assert clip.frames.shape[0] == len(range(0, 80, 3))
    assert clip.fps == pytest.approx(10.0 / 3)


# --- resizing -------------------------------------------------------------------------------------


@pytest.fixture()
def bands(tmp_path: Path) -> str:
    """Lossless 48x16 webp: red | green | blue thirds, so crops are checkable exactly."""
    frame = np.zeros((16, 48, 3), np.uint8)
    frame[:, :16, 0] = frame[:, 16:32, 1] = frame[:, 32:, 2] = 255
    return write_video(tmp_path / "bands.webp", np.stack([frame, frame[:, ::-1]]), fps=5, lossless=True)


def test_crop_keeps_aspect_stretch_does_not(bands: str) -> None:
    crop = read_video(bands, n_frames=1, stride=1, width=16, height=16, resize="crop").frames[0]
    stretch = read_video(bands, n_frames=1, stride=1, width=16, height=16, resize="stretch").frames[0]
    assert crop.shape == stretch.shape == (16, 16, 3)
    assert torch.equal(crop, torch.tensor([0.0, 1.0, 0.0]).expand(16, 16, 3))  # the green centre only
    assert stretch[:, 0, 0].min() > 0.9 and stretch[:, -1, 2].min() > 0.9  # red and blue squeezed in
    wide = read_video(bands, n_frames=1, stride=1, width=32, height=8, resize="crop").frames
    assert wide.shape == (1, 8, 32, 3)


def test_resize_none_center_crops_to_multiple_of_8(tmp_path: Path) -> None:
    src = np.random.default_rng(0).integers(0, 256, (2, 13, 21, 3), dtype=np.uint8)
    path = write_video(tmp_path / "odd.webp", src, fps=4, lossless=True)
    clip = read_video(path, n_frames=0, stride=1, resize="none")
    assert clip.frames.shape == (2, 8, 16, 3)
    assert np.array_equal(frames_to_uint8(clip.frames), src[:, 2:10, 2:18])
    assert clip.source_fps == pytest.approx(4.0) and clip.source_frames == 2


# --- writing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "kwargs", "fps_tol", "max_mean_err"),
    [
        (".mp4", {}, 1e-6, 4.0),
        (".gif", {}, 0.5, 4.0),  # GIF delays are centiseconds: 8 fps -> 120 ms -> 8.33
        (".webp", {}, 1e-6, 4.0),
        (".webp", {"lossless": True}, 1e-6, 0.0),
    ],
)
def test_round_trip(tmp_path: Path, ext: str, kwargs: dict, fps_tol: float, max_mean_err: float) -> None:
    src = _moving_frames()
    path = write_video(tmp_path / f"out{ext}", torch.from_numpy(src).float() / 255, fps=8.0, **kwargs)
    assert path == str(tmp_path / f"out{ext}")
    back = read_video(path, n_frames=0, stride=1, resize="none")
    assert back.frames.shape == (6, 32, 48, 3)
    assert back.source_frames == 6
    assert back.source_fps == pytest.approx(8.0, abs=fps_tol)
    err = np.abs(frames_to_uint8(back.frames).astype(np.int16) - src).mean()
    assert err <= max_mean_err
    assert os.listdir(tmp_path) == [f"out{ext}"]  # no temp files left


@pytest.mark.parametrize(("ext", "codec"), [(".webm", "libvpx-vp9"), (".mov", "libx264"), (".mkv", "libx264")])
def test_reads_other_ffmpeg_containers(tmp_path: Path, ext: str, codec: str) -> None:
    path = str(tmp_path / f"clip{ext}")
    writer = imageio_ffmpeg.write_frames(path, (48, 32), fps=12, codec=codec, macro_block_size=1, quality=9)
    writer.send(None)
    for frame in _moving_frames():
        writer.send(frame)
    writer.close()
    clip = read_video(path, n_frames=0, stride=2, width=24, height=16)
    assert clip.frames.shape == (3, 16, 24, 3)
    assert clip.source_frames == 6 and clip.source_fps == pytest.approx(12.0) and clip.fps == pytest.approx(6.0)


def test_write_overwrites_and_makes_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "clip.gif"
    write_video(target, _moving_frames(2), fps=4)
    write_video(target, _moving_frames(3), fps=4)
    assert read_video(target, n_frames=0, stride=1, resize="none").frames.shape[0] == 3
    assert os.listdir(target.parent) == ["clip.gif"]


@pytest.mark.parametrize(
    ("name", "frames", "kwargs", "match"),
    [
        ("x.mp4", np.zeros((2, 9, 16, 3), np.uint8), {}, "even width and height"),
        ("x.avi", np.zeros((2, 8, 8, 3), np.uint8), {}, "extensions"),
        ("x.gif", np.zeros((2, 8, 8), np.uint8), {}, r"\[F, H, W, 3\]"),
        ("x.gif", np.zeros((0, 8, 8, 3), np.uint8), {}, "F >= 1"),
        ("x.mp4", np.zeros((2, 8, 8, 3), np.uint8), {"lossless": True}, r"\.webp"),
        ("x.webp", np.zeros((2, 8, 8, 3), np.uint8), {"quality": 101}, "0..100"),
        ("x.gif", np.zeros((2, 8, 8, 3), np.uint8), {"fps": 0}, "positive"),
    ],
)
def test_write_errors_leave_nothing(tmp_path: Path, name: str, frames: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_video(tmp_path / name, frames, **kwargs)
    assert os.listdir(tmp_path) == []


def test_mp4_failure_mid_write_keeps_old_file(tmp_path: Path) -> None:
    """Cancel at the third frame: ffmpeg is stopped, its temp file removed, the old file kept."""
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous result")

    def cancel(done: int, total: int) -> None:
        if done == 3:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        write_video(target, _moving_frames(), fps=8, callback=cancel)
    assert target.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["clip.mp4"]


@pytest.mark.parametrize("leave_kib", [0, 12], ids=["no-space", "space-for-part"])
@pytest.mark.parametrize("ext", [".mp4", ".gif", ".webp"])
def test_full_disk_fails_cleanly(tmp_path: Path, ext: str, leave_kib: int) -> None:
    """A real full disk (a small tmpfs): one sentence naming the file, the old file intact, nothing left.

    ffmpeg used to leave a 0-byte mp4 here and write_video reported success.
    """
    with small_disk(tmp_path / "disk") as disk:
        target = disk / f"clip{ext}"
        write_video(target, _moving_frames(2), fps=8)
        existing = target.read_bytes()
        fill_disk(disk, leave_kib)
        before = files_under(disk)
        noise = torch.rand(8, 64, 64, 3, generator=torch.Generator().manual_seed(0))  # incompressible: > 12 KiB
        with pytest.raises(WriteError) as info:
            write_video(target, noise, fps=8)
        assert str(info.value) == (
            f"could not write {str(target)!r}: the disk is full (no space left on device); "
            "free some space or choose another folder"
        )
        assert target.read_bytes() == existing
        assert files_under(disk) == before


@pytest.mark.parametrize("written", [b"", b"\x00" * 512], ids=["empty", "garbage"])
@pytest.mark.parametrize("ext", [".mp4", ".gif", ".webp"])
def test_a_writer_that_reports_success_wrongly_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str, written: bytes
) -> None:
    """What was written is read back before it replaces anything: an empty or unreadable file is an error."""
    target = tmp_path / f"clip{ext}"
    target.write_bytes(b"previous result")
    monkeypatch.setitem(video_io._WRITERS, ext, lambda path, *args: Path(path).write_bytes(written))
    with pytest.raises(WriteError, match=r"nothing was written \(0 bytes\)|does not read back") as info:
        write_video(target, _moving_frames(2), fps=8)
    assert str(target) in str(info.value) and "retry" in str(info.value)
    assert target.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == [target.name]


def test_pillow_failure_mid_write_keeps_no_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"GIF89a truncated")
        raise OSError("encoder crashed")

    monkeypatch.setattr(Image.Image, "save", half_save)
    with pytest.raises(OSError, match="encoder crashed"):
        write_video(tmp_path / "clip.gif", _moving_frames(), fps=8)
    assert os.listdir(tmp_path) == []


# --- reading errors -------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="video file not found"):
        read_video(tmp_path / "nope.mp4")


@pytest.mark.parametrize("name", ["bad.mp4", "bad.gif", "bad.webm"])
def test_not_a_video(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("this is not a video")
    with pytest.raises(ValueError, match="cannot read .* as a video"):
        read_video(tmp_path / name)


@needs_videos
def test_start_beyond_clip() -> None:
    with pytest.raises(ValueError, match="clip has 80 frames; start=80 leaves none"):
        read_video(_clip("car-turn"), start=80)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stride": 0}, "stride must be >= 1"),
        ({"n_frames": -2}, "n_frames must be >= 1"),
        ({"start": -1}, "start must be >= 0"),
        ({"resize": "fit"}, "resize must be one of"),
        ({"width": 500}, "width=496"),
        ({"height": 0}, "height=8"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_video(_clip("car-turn"), **kwargs)


def test_resize_none_ignores_width_height(bands: str) -> None:
    clip = read_video(bands, n_frames=2, stride=1, width=0, height=3, resize="none")
    assert clip.frames.shape == (2, 16, 48, 3)


# --- helpers --------------------------------------------------------------------------------------


def test_frames_to_uint8() -> None:
    x = torch.tensor([[[[-1.0, 0.5, 2.0], [float("nan"), 1 / 255, 254.6 / 255]]]])
    assert frames_to_uint8(x).tolist() == [[[[0, 128, 255], [0, 1, 255]]]]
    assert frames_to_uint8(x.numpy()).tolist() == frames_to_uint8(x).tolist()
    u8 = np.arange(12, dtype=np.uint8).reshape(1, 1, 4, 3)
    assert np.array_equal(frames_to_uint8(u8), u8) and np.array_equal(frames_to_uint8(torch.from_numpy(u8)), u8)
    with pytest.raises(TypeError):
        frames_to_uint8(np.zeros((1, 1, 1, 3), np.int32))


def test_side_by_side_pads_with_last_frame() -> None:
    a = torch.rand(3, 8, 8, 3)
    b = (np.arange(2)[:, None, None, None] * np.ones((2, 8, 16, 3)) * 100).astype(np.uint8)
    out = side_by_side(a, b)
    assert out.shape == (3, 8, 24, 3) and out.dtype == torch.float32
    assert torch.equal(out[:, :, :8], a)
    assert torch.allclose(out[2, :, 8:], torch.full((8, 16, 3), 100 / 255))  # held last frame
    with pytest.raises(ValueError, match="same height"):
        side_by_side(a, torch.rand(3, 16, 8, 3))
    with pytest.raises(ValueError, match="at least one"):
        side_by_side()
