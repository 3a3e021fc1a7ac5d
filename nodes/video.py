"""Load Video / Save Video: files in ComfyUI's input and output folders <-> IMAGE batches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import folder_paths
import torch

from tav import validation, video_io

from .common import (
    CATEGORY,
    VIDEO_EXTS,
    check,
    first_error,
    number_error,
    progress,
    size_error,
    tav_warnings,
    with_ui,
)

RESIZE_MODES = list(video_io.RESIZE_MODES)
#: playback rate reported when frames come from an IMAGE input (no file to read it from)
IMAGES_FPS = 8.0


#: the official Tune-A-Video clips shipped with the pack, offered as ``tav-examples/<name>`` (read-only)
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "official_examples" / "videos"
EXAMPLES_PREFIX = "tav-examples/"


def example_clips() -> dict[str, str]:
    """``{"tav-examples/car-turn.mp4": absolute path}`` for the bundled clips, so the paper's workflows
    run as shipped without copying a clip into the input folder."""
    if not EXAMPLES_DIR.is_dir():
        return {}
    return {EXAMPLES_PREFIX + p.name: str(p) for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix in VIDEO_EXTS}


def video_files() -> list[str]:
    """Video files in the input folder (sub-folders included), sorted, then the bundled example clips."""
    root = folder_paths.get_input_directory()
    out = []
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        for f in files:
            if f.lower().endswith(VIDEO_EXTS):
                out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out) + [name for name in example_clips() if name not in out]


def _allowed_roots() -> list[str]:
    return [
        os.path.realpath(d)
        for d in (
            folder_paths.get_input_directory(),
            folder_paths.get_output_directory(),
            folder_paths.get_temp_directory(),
        )
    ]


def resolve_video(video: Optional[str], path: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """``(absolute path, None)`` or ``(None, readable error)``. ``path`` wins when given; it must
    lie inside ComfyUI's input, output or temp folder (relative paths are taken from input)."""
    if path and path.strip():
        raw = os.path.expanduser(path.strip())
        full = os.path.realpath(raw if os.path.isabs(raw) else os.path.join(folder_paths.get_input_directory(), raw))
        if not any(os.path.commonpath([full, r]) == r for r in _allowed_roots()):
            return None, f"path {path!r} is outside ComfyUI's input, output and temp folders"
        if not os.path.isfile(full):
            return None, f"video file not found: {path!r}"
        return full, None
    if not video:
        return None, "no video selected: upload one or put it into ComfyUI's input folder"
    if video.startswith(EXAMPLES_PREFIX) and not os.path.isfile(
        os.path.join(folder_paths.get_input_directory(), video)
    ):
        example = example_clips().get(video)  # a fixed list: no path from the request is opened
        if example is None:
            return None, f"{video!r} is not one of the bundled clips ({', '.join(example_clips())})"
        return example, None
    try:
        full = folder_paths.get_annotated_filepath(video)
    except Exception:  # noqa: BLE001 - invalid annotation
        full = None
    if not full or not os.path.isfile(full):
        return None, f"video file {video!r} not found in ComfyUI's input folder"
    return full, None


class TAV_LoadVideo:
    """Sample a clip for tuning: n_frames every `stride` frames from `start`, resized to a multiple of 8."""

    CATEGORY = f"{CATEGORY}/video"
    RETURN_TYPES = ("IMAGE", "INT", "FLOAT")
    RETURN_NAMES = ("frames", "frame_count", "fps")
    OUTPUT_TOOLTIPS = (
        "The sampled frames as an IMAGE batch [frames, height, width, 3].",
        "How many frames were sampled.",
        "Playback rate of the sampled clip (source fps / stride).",
    )
    FUNCTION = "load"
    DESCRIPTION = "Load a video (or any IMAGE batch) and sample the clip Tune-A-Video learns from."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "video": (
                    video_files(),
                    {
                        "video_upload": True,
                        "tooltip": (
                            "A video in ComfyUI's input folder (mp4, mov, webm, mkv, avi, gif, webp; use the upload "
                            "button to add one), or one of the paper's clips shipped with the pack (tav-examples/)."
                        ),
                    },
                ),
                "n_frames": (
                    "INT",
                    {"default": 24, "min": 1, "max": 1024, "tooltip": "How many frames to sample (the paper: 24)."},
                ),
                "start": (
                    "INT",
                    {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "Index of the first sampled frame."},
                ),
                "stride": (
                    "INT",
                    {"default": 2, "min": 1, "max": 1000, "tooltip": "Take every n-th frame (the paper: 2)."},
                ),
                "width": (
                    "INT",
                    {
                        "default": 512,
                        "min": 8,
                        "max": 4096,
                        "step": 8,
                        "tooltip": "Output width in pixels; must be a multiple of 8.",
                    },
                ),
                "height": (
                    "INT",
                    {
                        "default": 512,
                        "min": 8,
                        "max": 4096,
                        "step": 8,
                        "tooltip": "Output height in pixels; must be a multiple of 8.",
                    },
                ),
                "resize": (
                    RESIZE_MODES,
                    {
                        "default": "stretch",
                        "tooltip": (
                            "stretch: exactly width x height (the paper). crop: keep the aspect ratio, scale to cover "
                            "and centre-crop. none: keep the source size, cropped to a multiple of 8."
                        ),
                    },
                ),
            },
            "optional": {
                "images": (
                    "IMAGE",
                    {
                        "tooltip": (
                            "Frames from any IMAGE source (e.g. VideoHelperSuite Load Video). When connected, the file "
                            "is ignored and these frames are sampled and resized instead."
                        )
                    },
                ),
                "path": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": (
                            "Optional path to a video inside ComfyUI's input, output or temp folder (relative paths "
                            "start in input). Overrides the file picker when not empty."
                        ),
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(
        cls,
        input_types: Optional[dict] = None,
        video: Optional[str] = None,
        n_frames: Optional[int] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        resize: Optional[str] = None,
        path: Optional[str] = None,
    ) -> bool | str:
        # start/stride keep ComfyUI's own min/max checks (inputs named here lose them, so n_frames is checked here)
        file_error = None
        if "images" not in (input_types or {}):
            _, file_error = resolve_video(video, path)
        size = size_error(width, height)
        frames = number_error("n_frames", n_frames, 1, validation.MAX_FRAMES, integer=True)
        job = None
        if not (size or frames) and None not in (n_frames, width, height) and resize != "none":
            # refuse up front what cannot fit in memory: decoding it would take the server down
            job = check(video_io.check_job_size, int(n_frames), int(height), int(width), kind="load")
        return first_error(frames, size, job, file_error)

    @classmethod
    def IS_CHANGED(cls, video: Optional[str] = None, path: Optional[str] = None, **_: Any) -> str:
        full, err = resolve_video(video, path)
        if err or full is None:
            return err or ""
        st = os.stat(full)
        return f"{full}:{st.st_size}:{st.st_mtime_ns}"

    def load(
        self,
        video: str,
        n_frames: int,
        start: int,
        stride: int,
        width: int,
        height: int,
        resize: str,
        images: Optional[torch.Tensor] = None,
        path: str = "",
    ) -> Any:
        pick = {"n_frames": n_frames, "start": start, "stride": stride, "width": width, "height": height,
                "resize": resize, "callback": progress("load")}  # fmt: skip
        with tav_warnings() as warned:
            if images is not None:
                frames, fps = video_io.sample_frames(images, **pick), IMAGES_FPS / stride
            else:
                full, err = resolve_video(video, path)
                if err:
                    raise ValueError(err)
                clip = video_io.read_video(full, **pick)
                frames, fps = clip.frames, float(clip.fps)
        return with_ui((frames, int(frames.shape[0]), fps), warned)


class TAV_SaveVideo:
    """Encode frames to mp4/gif/webp in the output folder and preview them."""

    CATEGORY = f"{CATEGORY}/video"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    DESCRIPTION = "Write an IMAGE batch as a video file into ComfyUI's output folder (shown in the UI)."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames to write, [frames, height, width, 3]."}),
                "fps": (
                    "FLOAT",
                    {
                        "default": 8.0,
                        "min": 0.1,
                        "max": 240.0,
                        "step": 0.1,
                        "tooltip": (
                            "Playback rate in frames per second (connect Load Video's fps to keep the clip's speed)."
                        ),
                    },
                ),
                "format": (
                    ["mp4", "gif", "webp"],
                    {
                        "default": "mp4",
                        "tooltip": "mp4: H.264 (needs even width and height). gif / webp: animated images.",
                    },
                ),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "TuneAVideo",
                        "tooltip": "File name prefix; may contain a sub-folder of the output folder.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, fps: Optional[float] = None) -> bool | str:
        return first_error(number_error("fps", fps, 0.1, 240.0))

    def save(self, images: torch.Tensor, fps: float, format: str, filename_prefix: str) -> dict:  # noqa: A002
        out_dir = folder_paths.get_output_directory()
        f, h, w, _ = images.shape
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir, w, h)
        os.makedirs(folder, exist_ok=True)
        filename = f"{name}_{counter:05}_.{format}"
        video_io.write_video(os.path.join(folder, filename), images[..., :3], fps, callback=progress("save"))
        result = {"filename": filename, "subfolder": subfolder, "type": "output"}
        return {"ui": {"images": [result], "animated": (True,), "frames": [int(f)]}}
