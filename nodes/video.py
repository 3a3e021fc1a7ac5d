"""Load Video / Save Video: files in ComfyUI's input and output folders <-> IMAGE batches."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import folder_paths
import torch
from comfy_api.v0_0_2 import InputImpl, Types, io, ui

from tav import validation, video_io

from . import files
from .common import (
    CATEGORY,
    VIDEO_EXTS,
    check,
    check_choice,
    first_error,
    number_error,
    progress,
    side_input,
    size_error,
    tav_warnings,
    with_ui,
)

RESIZE_MODES = list(video_io.RESIZE_MODES)
VIDEO_FORMATS = ["mp4", "gif", "webp"]
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
    """Video files in the input folder (sub-folders included) that resolve inside ComfyUI's folders,
    sorted, then the bundled example clips."""
    root = folder_paths.get_input_directory()
    roots = files.media_roots()
    out = []
    for folder, names in files.walk_confined(root, roots):
        for f in names:
            if f.lower().endswith(VIDEO_EXTS) and files.confined_file(folder, f, roots):
                out.append(os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/"))
    return sorted(out) + [name for name in example_clips() if name not in out]


def not_a_video(value: str) -> str:
    """The one refusal for a video a prompt names: the same whether or not the path exists."""
    return (
        f"video {value!r} is not a video file inside ComfyUI's input, output or temp folder (after following "
        "symlinks): pick one from the list, upload it, or give a path inside those folders"
    )


def resolve_video(video: Optional[str], path: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """``(real path, None)`` or ``(None, readable error)``. ``path`` wins when given. Either must be a
    regular file whose real path lies inside ComfyUI's input, output or temp folder (relative names
    start in input; ``name [output]`` / ``[temp]`` annotations as in stock nodes), or a bundled clip."""
    if path and path.strip():
        value = path.strip()
    elif video:
        value = video
    else:
        return None, "no video selected: upload one or put it into ComfyUI's input folder"
    name, base = folder_paths.annotated_filepath(value)
    full = files.confined_file(base or folder_paths.get_input_directory(), name, files.media_roots())
    if full is None and value.startswith(EXAMPLES_PREFIX):
        full = example_clips().get(value)  # a fixed list: no path from the request is opened
    return (full, None) if full else (None, not_a_video(value))


class TAV_LoadVideo(io.ComfyNode):
    """Sample a clip for tuning: n_frames every `stride` frames from `start`, resized to a multiple of 8."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_LoadVideo",
            display_name="Load Video (Tune-A-Video)",
            category=f"{CATEGORY}/video",
            description="Load a video (a file, a native VIDEO or any IMAGE batch) and sample the clip Tune-A-Video "
            "learns from.",
            inputs=[
                io.Combo.Input(
                    "video",
                    options=video_files(),
                    upload=io.UploadType.video,
                    tooltip="A video in ComfyUI's input folder (mp4, mov, webm, mkv, avi, gif, webp; use the upload "
                    "button to add one), or one of the paper's clips shipped with the pack (tav-examples/).",
                ),
                io.Int.Input(
                    "n_frames", default=24, min=1, max=1024, tooltip="How many frames to sample (the paper: 24)."
                ),
                io.Int.Input("start", default=0, min=0, max=1_000_000, tooltip="Index of the first sampled frame."),
                io.Int.Input("stride", default=2, min=1, max=1000, tooltip="Take every n-th frame (the paper: 2)."),
                side_input("width", "Output width in pixels; must be a multiple of 8."),
                side_input("height", "Output height in pixels; must be a multiple of 8."),
                io.Combo.Input(
                    "resize",
                    options=RESIZE_MODES,
                    default="stretch",
                    tooltip="stretch: exactly width x height (the paper). crop: keep the aspect ratio, scale to cover "
                    "and centre-crop. none: keep the source size, cropped to a multiple of 8.",
                ),
                io.Image.Input(
                    "images",
                    optional=True,
                    tooltip="Frames from any IMAGE source (e.g. VideoHelperSuite Load Video). When connected, the file "
                    "is ignored and these frames are sampled and resized instead (at 8 fps).",
                ),
                io.String.Input(
                    "path",
                    optional=True,
                    default="",
                    tooltip="Optional path to a video inside ComfyUI's input, output or temp folder (relative paths "
                    "start in input). Overrides the file picker when not empty.",
                ),
                io.Video.Input(
                    "source_video",
                    optional=True,
                    tooltip="A native VIDEO (stock Load Video, Create Video): its frames and frame rate are sampled "
                    "and resized instead of the file. Takes precedence over images.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    "frames_out",
                    display_name="frames",
                    tooltip="The sampled frames as an IMAGE batch [frames, height, width, 3].",
                ),
                io.Int.Output("frame_count", display_name="frame_count", tooltip="How many frames were sampled."),
                io.Float.Output(
                    "fps", display_name="fps", tooltip="Playback rate of the sampled clip (source fps / stride)."
                ),
                io.Video.Output(
                    "clip",
                    display_name="clip",
                    tooltip="The sampled clip as a native VIDEO (for stock Save Video and friends).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        n_frames: Optional[int] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        resize: Optional[str] = None,
        path: Optional[str] = None,
    ) -> bool | str:
        # `video` is not named here, so ComfyUI's own value-in-list check keeps guarding it (the list holds
        # only files that resolve inside its folders); a named input loses ComfyUI's checks, so resize's
        # choice and n_frames' range are checked here. A `path` is checked even when other frames are
        # connected: a prompt that names a file outside ComfyUI's folders is refused either way.
        file_error = resolve_video(None, path)[1] if path and path.strip() else None
        choice = None if resize is None or resize in RESIZE_MODES else f"resize must be one of {RESIZE_MODES}"
        size = size_error(width, height)
        frames = number_error("n_frames", n_frames, 1, validation.MAX_FRAMES, integer=True)
        job = None
        if not (size or frames) and None not in (n_frames, width, height) and resize != "none":
            # refuse up front what cannot fit in memory: decoding it would take the server down
            job = check(video_io.check_job_size, int(n_frames), int(height), int(width), kind="load")
        return first_error(file_error, choice, frames, size, job)

    @classmethod
    def fingerprint_inputs(cls, video: Optional[str] = None, path: Optional[str] = None, **_: Any) -> str:
        full, err = resolve_video(video, path)
        if err or full is None:
            return err or ""
        st = os.stat(full)
        return f"{full}:{st.st_size}:{st.st_mtime_ns}"

    @classmethod
    def execute(
        cls,
        video: str,
        n_frames: int,
        start: int,
        stride: int,
        width: int,
        height: int,
        resize: str,
        images: Optional[torch.Tensor] = None,
        path: str = "",
        source_video: Any = None,
    ) -> io.NodeOutput:
        check_choice("resize", resize, RESIZE_MODES)  # a direct call skips validate_inputs
        pick = {"n_frames": n_frames, "start": start, "stride": stride, "width": width, "height": height,
                "resize": resize, "callback": progress("load")}  # fmt: skip
        with tav_warnings() as warned:
            if source_video is not None:
                parts = source_video.get_components()
                frames = video_io.sample_frames(parts.images, **pick)
                fps = float(parts.frame_rate) / stride
            elif images is not None:
                frames, fps = video_io.sample_frames(images, **pick), IMAGES_FPS / stride
            else:
                full, err = resolve_video(video, path)
                if err:
                    raise ValueError(err)
                clip = video_io.read_video(full, **pick)
                frames, fps = clip.frames, float(clip.fps)
        return with_ui((frames, int(frames.shape[0]), fps, native_video(frames, fps)), warned)


def native_video(frames: torch.Tensor, fps: float) -> Any:
    """IMAGE frames as the host's native VIDEO (no audio), so stock video nodes take the clip as it is."""
    components = Types.VideoComponents(images=frames, audio=None, frame_rate=Fraction(fps).limit_denominator(1001))
    return InputImpl.VideoFromComponents(components)


class TAV_SaveVideo(io.ComfyNode):
    """Encode frames to mp4/gif/webp in the output folder and preview them."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_SaveVideo",
            display_name="Save Video (Tune-A-Video)",
            category=f"{CATEGORY}/video",
            description="Write an IMAGE batch as a video file into ComfyUI's output folder (shown in the UI).",
            is_output_node=True,
            inputs=[
                io.Image.Input("images", tooltip="The frames to write, [frames, height, width, 3]."),
                io.Float.Input(
                    "fps",
                    default=8.0,
                    min=0.1,
                    max=240.0,
                    step=0.1,
                    tooltip="Playback rate in frames per second (connect Load Video's fps to keep the clip's speed).",
                ),  # fmt: skip
                io.Combo.Input(
                    "format",
                    options=VIDEO_FORMATS,
                    default="mp4",
                    tooltip="mp4: H.264 (needs even width and height). gif / webp: animated images.",
                ),
                io.String.Input(
                    "filename_prefix",
                    default="TuneAVideo",
                    tooltip="File name prefix; may contain a sub-folder of the output folder.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, fps: Optional[float] = None) -> bool | str:
        return first_error(number_error("fps", fps, 0.1, 240.0))

    @classmethod
    def execute(cls, images: torch.Tensor, fps: float, format: str, filename_prefix: str) -> io.NodeOutput:  # noqa: A002
        check_choice("format", format, VIDEO_FORMATS)
        out_dir = folder_paths.get_output_directory()
        f, h, w, _ = images.shape
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir, w, h)
        os.makedirs(files.output_folder(folder, out_dir, "ComfyUI's output folder"), exist_ok=True)
        filename = f"{name}_{counter:05}_.{format}"
        video_io.write_video(os.path.join(folder, filename), images[..., :3], fps, callback=progress("save"))
        saved = ui.SavedResult(filename, subfolder, io.FolderType.output)
        return io.NodeOutput(ui={**ui.PreviewVideo([saved]).as_dict(), "frames": [int(f)]})
