"""Read and write the short clips Tune-A-Video tunes on and produces.

Reading samples frames the way the reference did (``range(start, total, stride)[:n_frames]``) and
streams them: decoding stops at the last frame needed, so a 24-frame sample from a long file costs
24 * stride decoded frames, not the whole file. mp4/mov/webm/mkv go through ``imageio_ffmpeg``
(it ships its own ffmpeg binary); animated gif/webp go through Pillow.

Resizing uses ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` on float pixels
for every source. The reference resized inside decord (ffmpeg's scaler); any antialiased filter
gives near-identical 512x512 frames, and doing it in torch keeps one code path for ffmpeg and
Pillow sources, avoids a uint8 round trip, and is deterministic across ffmpeg builds.

Writing is atomic: every format is encoded to a hidden temp file next to the target and moved into
place with ``os.replace``, so a crash or a cancelled job never leaves a truncated video behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any, Optional

import imageio_ffmpeg
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .atomic import atomic_output, verify_written
from .job_size import check_job_size
from .progress import ProgressFn, report
from .validation import (
    NonFiniteError,
    check_finite_tensor,
    check_input_file,
    check_output_file,
    warn,
)

PathLike = str | os.PathLike[str]
#: ``[F, H, W, 3]`` float tensor/array in 0..1, or a uint8 tensor/array in 0..255.
Frames = torch.Tensor | np.ndarray

RESIZE_MODES = ("stretch", "crop", "none")
#: Containers read with Pillow; everything else goes to ffmpeg.
PILLOW_READ_EXTS = (".gif", ".webp")
WRITE_EXTS = (".mp4", ".gif", ".webp")
#: Playback rate assumed when a gif/webp frame has no delay (what browsers do with a 0 delay).
FALLBACK_FPS = 10.0
#: x264 constant-rate factor used when ``quality`` is not given (visually lossless for most clips).
DEFAULT_MP4_CRF = 18
DEFAULT_WEBP_QUALITY = 90


@dataclasses.dataclass
class VideoClip:
    """A sampled clip. ``fps`` is the playback rate of the sample (``source_fps / stride``)."""

    #: ``[F, H, W, 3]`` float32 in 0..1 (ComfyUI IMAGE layout)
    frames: torch.Tensor
    fps: float
    source_fps: float
    #: number of frames in the file
    source_frames: int
    path: str


def read_video(
    path: PathLike,
    *,
    n_frames: int = 24,
    start: int = 0,
    stride: int = 2,
    width: int = 512,
    height: int = 512,
    resize: str = "stretch",
    callback: Optional[ProgressFn] = None,
) -> VideoClip:
    """Sample ``n_frames`` frames every ``stride`` frames from ``start`` and resize them.

    ``n_frames`` 0 or -1 takes every frame the selection reaches. ``resize``: ``"stretch"`` to
    exactly width x height (the reference), ``"crop"`` scales to cover width x height keeping the
    aspect ratio and centre-crops, ``"none"`` keeps the source size centre-cropped down to multiples
    of 8 (width/height unused). A clip that yields fewer frames than asked gives a
    :class:`tav.validation.TavWarning`; one frame when more were asked (a still image, a stride past
    the end) is an error. The job size is checked against the memory before decoding, and
    ``callback(decoded, total)`` runs after every decoded frame (progress, and Cancel).
    """
    path = os.fspath(path)
    _check_read_args(n_frames, start, stride, width, height, resize)
    path = check_input_file(path, "video file")  # missing, empty, a device or a pipe: said so, never opened
    ext = os.path.splitext(path)[1].lower()
    source = _pillow_frames(path) if ext in PILLOW_READ_EXTS else _ffmpeg_frames(path)
    want = None if n_frames in (0, -1) else n_frames
    with contextlib.closing(source):
        source_fps, total, (w0, h0) = next(source)
        if total is not None and start >= total:
            raise ValueError(_start_message(total, start))
        reach = total if want is None else (start + stride * (want - 1) + 1)
        out_w, out_h = (w0 - w0 % 8, h0 - h0 % 8) if resize == "none" else (width, height)
        n_out = want if want is not None else (None if total is None else -(-(total - start) // stride))
        if n_out:
            check_job_size(n_out, out_h, out_w, kind="load")
        last = None if want is None else start + stride * (want - 1)
        picked = []
        decoded = 0
        for index, frame in enumerate(source):
            decoded = index + 1
            if index >= start and (index - start) % stride == 0:
                picked.append(_fit(frame, resize, width, height, path))
            report(callback, decoded, reach or decoded)
            if index == last or (total is not None and decoded >= total):
                break
        else:
            total = decoded  # reached the end of the stream: what decoded is the truth
    if not picked:
        if decoded == 0:
            raise ValueError(f"{path!r} contains no decodable video frames; check that it is a video file")
        raise ValueError(_start_message(decoded, start))
    total = total if total is not None else decoded
    check_frame_count(len(picked), want, total, start, stride, path)
    return VideoClip(
        frames=torch.stack(picked),
        fps=source_fps / stride,
        source_fps=source_fps,
        source_frames=total,
        path=path,
    )


def check_frame_count(got: int, want: Optional[int], total: int, start: int, stride: int, source: str) -> None:
    """The one rule for short selections: 1 frame when more were asked is an error, fewer frames a warning."""
    if want is not None and got >= want:
        return
    if got == 1 and (want is None or want > 1):
        if total == 1:
            raise ValueError(
                f"{source!r} holds a single frame: it is a still image, not a video; Tune-A-Video learns motion "
                "from several frames, so give it a video (mp4, mov, webm, gif)"
            )
        best = (total - 1 - start) // max(1, (want or 2) - 1)
        raise ValueError(
            f"start={start} and stride={stride} reach only 1 frame of the {total} in {source!r}; "
            f"use stride {max(1, best)} or less" + (", or an earlier start" if start > 0 else "")
        )
    if want is not None and got < want:
        best = (total - 1 - start) // max(1, want - 1)
        if 1 <= best < stride:
            fix = f"use stride {best} or less"
        elif start > 0 and (total - 1) // max(1, want - 1) >= 1:
            fix = "use an earlier start"
        else:
            fix = f"ask for at most {got} frames or use a longer clip"
        warn(
            f"asked for {want} frames but {source!r} has {total}: start={start}, stride={stride} give only {got}; "
            f"continuing with {got} frames ({fix} to get {want})"
        )


def sample_frames(
    images: torch.Tensor,
    *,
    n_frames: int,
    start: int,
    stride: int,
    width: int,
    height: int,
    resize: str,
    callback: Optional[ProgressFn] = None,
    source: str = "the input images",
) -> torch.Tensor:
    """:func:`read_video`'s selection and resize for frames already in memory (an IMAGE batch), frame by frame."""
    _check_read_args(n_frames, start, stride, width, height, resize)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{source} must be frames [F, H, W, C], got {shape}")
    total = int(images.shape[0])
    if start >= total:
        raise ValueError(_start_message(total, start))
    want = None if n_frames in (0, -1) else n_frames
    picked = images[start::stride][:want] if want else images[start::stride]
    h0, w0 = picked.shape[1:3]
    out_w, out_h = (w0 - w0 % 8, h0 - h0 % 8) if resize == "none" else (width, height)
    check_job_size(picked.shape[0], out_h, out_w, kind="load")
    check_frame_count(int(picked.shape[0]), want, total, start, stride, source)
    out = []
    for i in range(picked.shape[0]):
        out.append(resize_frames(picked[i : i + 1, ..., :3], width, height, resize))
        report(callback, i + 1, picked.shape[0])
    return torch.cat(out)


def write_video(
    path: PathLike,
    frames: Frames,
    fps: float = 8.0,
    *,
    quality: int | None = None,
    lossless: bool = False,
    callback: Optional[ProgressFn] = None,
) -> str:
    """Encode ``frames`` ([F,H,W,3]) by the file extension and return the path written.

    ``.mp4``: H.264, yuv420p (plays everywhere; needs even width and height); ``quality`` 0..100
    maps linearly to x264 CRF 51..0 (default CRF 18). ``.webp``: animated WebP; ``quality`` 0..100
    (default 90), or ``lossless=True`` for exact pixels. ``.gif``: 256-colour palette per frame,
    loops forever; GIF stores delays in 1/100 s, so the rate is rounded (8 fps plays at 8.33) and
    ``quality`` has no effect. Parent folders are created. ``callback(frame, total)`` runs per frame
    (progress, and Cancel); the file is written atomically with umask permissions.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in WRITE_EXTS:
        raise ValueError(f"cannot write {path!r}: use one of the extensions {', '.join(WRITE_EXTS)}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if quality is not None and not 0 <= quality <= 100:
        raise ValueError(f"quality must be in 0..100 (higher is better), got {quality!r}")
    if lossless and ext != ".webp":
        raise ValueError(f"lossless=True needs a .webp path; {ext} cannot store exact pixels")
    check_output_file(path, exts=WRITE_EXTS, what="video file")
    if isinstance(frames, torch.Tensor):
        check_finite_tensor(frames, "the frames to write", hint="the upstream result is broken; nothing was written")
    elif isinstance(frames, np.ndarray) and np.issubdtype(frames.dtype, np.floating) and not np.isfinite(frames).all():
        raise NonFiniteError("the frames to write hold NaN/infinite values; nothing was written")
    data = frames_to_uint8(frames)
    if data.ndim != 4 or data.shape[-1] != 3 or data.shape[0] < 1:
        raise ValueError(f"frames must be [F, H, W, 3] with F >= 1, got shape {tuple(data.shape)}")
    n, h, w, _ = data.shape
    if ext == ".mp4" and (w % 2 or h % 2):
        raise ValueError(
            f"mp4 (H.264 yuv420p) needs even width and height, got {w}x{h}; "
            "crop or resize to even sizes, or write .webp/.gif"
        )
    with atomic_output(path, ext) as tmp:
        _WRITERS[ext](tmp, data, fps, quality, lossless, callback)
        if ext == ".mp4":
            verify_written(tmp, path, lambda p: _mp4_reads_back(p, w, h))
        else:
            verify_written(tmp, path, lambda p: _pillow_reads_back(p, w, h, n))
    return path


def frames_to_uint8(frames: Frames) -> np.ndarray:
    """Float 0..1 (clamped, NaN -> 0, rounded) or uint8 frames -> contiguous uint8 numpy array."""
    if isinstance(frames, torch.Tensor):
        if frames.dtype == torch.uint8:
            return np.ascontiguousarray(frames.detach().cpu().numpy())
        if not frames.is_floating_point():
            raise TypeError(f"frames must be float 0..1 or uint8, got {frames.dtype}")
        x = torch.nan_to_num(frames.detach().float(), nan=0.0).clamp_(0, 1).mul_(255).round_()
        return np.ascontiguousarray(x.to(torch.uint8).cpu().numpy())
    arr = np.asarray(frames)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"frames must be float 0..1 or uint8, got {arr.dtype}")
    x = np.clip(np.nan_to_num(arr.astype(np.float32), nan=0.0), 0, 1) * 255
    return np.ascontiguousarray(np.round(x).astype(np.uint8))


def side_by_side(*videos: Frames) -> torch.Tensor:
    """Concatenate clips left to right for comparisons; shorter clips hold their last frame.

    All clips must share a height. Returns float32 ``[F, H, sum(W), 3]`` on the CPU.
    """
    if not videos:
        raise ValueError("side_by_side needs at least one clip")
    clips = [_as_float_frames(v) for v in videos]
    heights = [c.shape[1] for c in clips]
    if len(set(heights)) > 1:
        raise ValueError(f"clips must have the same height to sit side by side, got {heights}")
    n = max(c.shape[0] for c in clips)
    padded = [torch.cat([c, c[-1:].expand(n - c.shape[0], -1, -1, -1)]) for c in clips]
    return torch.cat(padded, dim=2)


# --- reading -------------------------------------------------------------------------------------


def _check_read_args(n_frames: int, start: int, stride: int, width: int, height: int, resize: str) -> None:
    if n_frames < -1:
        raise ValueError(f"n_frames must be >= 1, or 0/-1 for all frames; got {n_frames}")
    if start < 0:
        raise ValueError(f"start must be >= 0 (a frame index), got {start}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1 (1 = every frame, 2 = every other), got {stride}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if resize != "none":
        for name, value in (("width", width), ("height", height)):
            if value < 8 or value % 8:
                raise ValueError(
                    f"{name} must be a positive multiple of 8 (the VAE downsamples by 8), got {value}; "
                    f"pass e.g. {name}={max(8, round(value / 8) * 8)}"
                )


def _start_message(total: int, start: int) -> str:
    return f"clip has {total} frames; start={start} leaves none; pass start between 0 and {max(total - 1, 0)}"


def _unreadable(path: str, err: BaseException) -> ValueError:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    detail = lines[-1] if lines else type(err).__name__
    return ValueError(f"cannot read {path!r} as a video ({detail}); expected mp4/mov/webm/mkv/gif/webp")


def _ffmpeg_frames(path: str) -> Iterator[Any]:
    """Yield ``(fps, frame_count or None)``, then uint8 ``[H, W, 3]`` frames in decode order."""
    # passthrough: one output frame per decoded frame, so indices are frame numbers, not timestamps
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    try:
        try:
            meta = next(reader)
        except (OSError, RuntimeError, StopIteration) as err:
            raise _unreadable(path, err) from err
        w, h = meta["size"]
        fps = float(meta.get("fps") or FALLBACK_FPS)
        try:  # counts packets with a stream copy: cheap, no decoding
            total: int | None = imageio_ffmpeg.count_frames_and_secs(path)[0]
        except RuntimeError:
            total = None
        yield fps, total, (w, h)
        for raw in reader:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
    finally:
        reader.close()  # stops ffmpeg when we break off early


def _pillow_frames(path: str) -> Iterator[Any]:
    """Like :func:`_ffmpeg_frames` for animated gif/webp (Pillow applies GIF disposal for us)."""
    try:
        image = Image.open(path)
    except OSError as err:
        raise _unreadable(path, err) from err
    with image:
        try:
            first = np.asarray(image.convert("RGB"))
        except (OSError, EOFError) as err:
            raise _unreadable(path, err) from err
        duration = image.info.get("duration") or 0  # ms; webp sets it only once a frame is loaded
        fps = 1000.0 / duration if duration > 0 else FALLBACK_FPS
        yield fps, getattr(image, "n_frames", 1), image.size
        yield first
        for index in range(1, getattr(image, "n_frames", 1)):
            image.seek(index)
            yield np.asarray(image.convert("RGB"))


def resize_frames(frames: torch.Tensor, width: int, height: int, resize: str = "stretch") -> torch.Tensor:
    """Float ``[F, h, w, C]`` -> ``[F, H, W, C]`` as :func:`read_video` resizes (any value range).

    "stretch" resizes to exactly ``width`` x ``height``; "crop" takes the largest centred window
    with the target aspect ratio, then resizes; "none" centre-crops to a multiple of 8.
    """
    h0, w0 = frames.shape[1:3]
    if resize == "none":
        if h0 < 8 or w0 < 8:
            raise ValueError(f"frames are {w0}x{h0}; resize='none' needs at least 8x8, use 'stretch'")
        ch, cw = h0 - h0 % 8, w0 - w0 % 8
        height, width = ch, cw
    elif resize == "crop":
        if w0 * height > h0 * width:
            ch, cw = h0, max(1, round(h0 * width / height))
        else:
            ch, cw = max(1, round(w0 * height / width)), w0
    else:
        ch, cw = h0, w0
    top, left = (h0 - ch) // 2, (w0 - cw) // 2
    x = frames[:, top : top + ch, left : left + cw].permute(0, 3, 1, 2).float()
    if (ch, cw) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1).contiguous()


def _fit(frame: np.ndarray, resize: str, width: int, height: int, path: str) -> torch.Tensor:
    """uint8 ``[h, w, 3]`` -> float32 ``[H, W, 3]`` in 0..1 at the requested size."""
    try:
        x = resize_frames(torch.from_numpy(frame.astype(np.float32))[None], width, height, resize)[0]
    except ValueError as e:
        raise ValueError(f"{path!r}: {e}") from None
    # scaling to 0..1 after the resize is exact (the filter is linear) and touches fewer pixels
    return x.div_(255.0).clamp_(0, 1)


def _as_float_frames(video: Frames) -> torch.Tensor:
    if isinstance(video, torch.Tensor) and video.is_floating_point():
        x = video.detach().to("cpu", torch.float32)
    else:
        x = torch.from_numpy(frames_to_uint8(video)).float().div_(255.0)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] < 1:
        raise ValueError(f"each clip must be [F, H, W, 3] with F >= 1, got shape {tuple(x.shape)}")
    return x


# --- writing -------------------------------------------------------------------------------------


def _write_mp4(
    path: str, data: np.ndarray, fps: float, quality: int | None, lossless: bool, callback: Optional[ProgressFn]
) -> None:
    """Pipe raw frames into ffmpeg (H.264) and raise when ffmpeg fails.

    Why not ``imageio_ffmpeg.write_frames``: it never checks ffmpeg's exit status, so a full disk
    gave a 0-byte mp4 reported as written. Here ffmpeg's own message decides the error.
    """
    crf = DEFAULT_MP4_CRF if quality is None else round(51 * (100 - quality) / 100)
    _, h, w, _ = data.shape
    rate = str(Fraction(fps).limit_denominator())
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    cmd += ["-s", f"{w}x{h}", "-r", rate, "-i", "-", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    cmd += ["-crf", str(crf), "-movflags", "+faststart", path]
    # a session of its own: Ctrl-C reaches Python, which then stops ffmpeg (below)
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdin is not None and proc.stderr is not None
    err_pipe, stderr = proc.stderr, []
    drain = threading.Thread(target=lambda: stderr.append(err_pipe.read()), daemon=True)
    drain.start()
    try:
        for i, frame in enumerate(data):
            try:
                proc.stdin.write(frame.tobytes())
            except BrokenPipeError:
                break  # ffmpeg gave up; its exit status and message say why
            report(callback, i + 1, len(data))
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        drain.join()
        err_pipe.close()
    if proc.returncode != 0:
        raise _ffmpeg_error(proc.returncode, b"".join(stderr).decode(errors="replace"))


def _ffmpeg_error(code: int, text: str) -> OSError:
    """An OSError for a failed ffmpeg run: its errno when ffmpeg names one, else its last message line."""
    for err in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO):
        if os.strerror(err).lower() in text.lower():
            return OSError(err, os.strerror(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return OSError(errno.EIO, f"ffmpeg failed with exit status {code}" + (f": {lines[-1]}" if lines else ""))


def _mp4_reads_back(path: str, width: int, height: int) -> None:
    """The first frame decodes at the written size."""
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    try:
        meta = next(reader)
        if tuple(meta["size"]) != (width, height):
            raise ValueError(f"{meta['size'][0]}x{meta['size'][1]} instead of {width}x{height}")
        if len(next(reader)) != width * height * 3:
            raise ValueError("the first frame is incomplete")
    except StopIteration:
        raise ValueError("no frame in it") from None
    finally:
        reader.close()


def _pillow_reads_back(path: str, width: int, height: int, frames: int) -> None:
    """Pillow opens it at the written size and frame count and decodes the first frame."""
    with Image.open(path) as im:
        if im.size != (width, height) or getattr(im, "n_frames", 1) != frames:
            n = getattr(im, "n_frames", 1)
            raise ValueError(f"{n} frames of {im.size[0]}x{im.size[1]} instead of {frames} of {width}x{height}")
        im.seek(0)
        im.load()


def _pil_images(data: np.ndarray, callback: Optional[ProgressFn]) -> list[Image.Image]:
    images = []
    for i, frame in enumerate(data):
        images.append(Image.fromarray(frame))
        report(callback, i + 1, len(data))
    return images


def _write_gif(
    path: str, data: np.ndarray, fps: float, quality: int | None, lossless: bool, callback: Optional[ProgressFn]
) -> None:
    # GIF delays are centiseconds; browsers replace delays under 20 ms with 100 ms
    delay = max(20, round(100.0 / fps) * 10)
    images = _pil_images(data, callback)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=delay, loop=0)


def _write_webp(
    path: str, data: np.ndarray, fps: float, quality: int | None, lossless: bool, callback: Optional[ProgressFn]
) -> None:
    images = _pil_images(data, callback)
    images[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000.0 / fps)),
        loop=0,
        lossless=lossless,
        quality=DEFAULT_WEBP_QUALITY if quality is None else quality,
    )


_WRITERS: dict[str, Callable[[str, np.ndarray, float, int | None, bool, Optional[ProgressFn]], None]] = {
    ".mp4": _write_mp4,
    ".gif": _write_gif,
    ".webp": _write_webp,
}
