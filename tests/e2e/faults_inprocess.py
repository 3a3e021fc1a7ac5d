"""A full disk during Save Video and Save Tuned, on the real node classes against the host's own modules.

Run by ``test_e2e_faults.py`` in a subprocess with the host's Python (TAV_COMFY_PYTHON), as ComfyUI
would run the nodes: newer hosts import their own dependencies (e.g. comfy_aimdo) that the test
runner's environment need not have. For each case: save once, then save again under the same name
while the writer fails half way with ENOSPC. Prints one JSON object: per case the error message, the
name saved first, whether that file is intact, and whether the folder holds exactly the files it held.

Usage: python faults_inprocess.py --comfy-dir DIR --tmp DIR
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

from inprocess import REPO, boot_pack


def _load(name: str) -> ModuleType:
    """A module of the repository's tests/ by path (the host has a ``tests`` package of its own)."""
    spec = importlib.util.spec_from_file_location(f"tav_tests_{name}", REPO / "tests" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _full_disk(path: str, *args: object, **kwargs: object) -> None:
    """A writer that gets half way, then finds the disk full."""
    with open(path, "wb") as f:
        f.write(b"\x00" * 1024)
    raise OSError(errno.ENOSPC, "No space left on device")


def _save_video(node: Any, images: Any, fmt: str) -> str:
    return node.execute(images, 8.0, fmt, "clip").ui["images"][0]["filename"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy-dir", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--small-disk", help="a small file system mounted by the caller: the real full-disk cases")
    a = ap.parse_args()

    boot_pack(a.comfy_dir)
    import folder_paths
    import torch
    from tav_pack import nodes

    from tav import video_io, weights
    from tav.inflation import inflate

    files_under = _load("bad_inputs").files_under
    tiny_pipeline = _load("tiny").tiny_pipeline
    real_save_path = folder_paths.get_save_image_path

    def same_name_again(*args: object, **kwargs: object) -> tuple:
        """The next save reuses counter 1: the name saved before (a re-run with a fixed name)."""
        folder, name, _counter, subfolder, prefix = real_save_path(*args, **kwargs)
        return folder, name, 1, subfolder, prefix

    def case(folder: Path, save: Callable[[], str], writer: Any, first: str = "") -> dict:
        """Save once (``save`` returns the file's name; or ``first`` was saved), then again with a full disk."""
        first = first or save()
        existing = (folder / first).read_bytes()
        before = files_under(folder)
        with writer, mock.patch.object(folder_paths, "get_save_image_path", same_name_again):
            try:
                save()
                message = ""
            except OSError as e:
                message = str(e)
        return {
            "message": message,
            "first": first,
            "intact": (folder / first).read_bytes() == existing,
            "same_files": files_under(folder) == before,
        }

    res = {}
    for fmt in ("mp4", "gif", "webp"):
        out = Path(a.tmp) / f"output_{fmt}"
        out.mkdir()
        folder_paths.set_output_directory(str(out))
        save = functools.partial(_save_video, nodes.TAV_SaveVideo, torch.rand(2, 64, 64, 3), fmt)
        res[fmt] = case(out, save, mock.patch.dict(video_io._WRITERS, {f".{fmt}": _full_disk}))

    tuned = Path(a.tmp) / "tuneavideo"
    tuned.mkdir()
    folder_paths.folder_names_and_paths["tuneavideo"] = ([str(tuned)], {".safetensors"})
    pipe = inflate(tiny_pipeline())
    res["tuned"] = case(
        tuned,
        lambda: nodes.TAV_SaveTuned.execute(pipe, "tuned").args[0],
        mock.patch.object(weights, "_write_file", _full_disk),
    )
    if a.small_disk:  # a real full file system: ffmpeg and Pillow meet ENOSPC themselves
        fill_disk = _load("bad_inputs").fill_disk
        for fmt in ("mp4", "gif", "webp"):
            disk = Path(a.small_disk) / fmt
            disk.mkdir()
            folder_paths.set_output_directory(str(disk))
            first = _save_video(nodes.TAV_SaveVideo, torch.rand(2, 64, 64, 3), fmt)
            filler = disk / "filler"
            fill_disk(disk)
            save = functools.partial(_save_video, nodes.TAV_SaveVideo, torch.rand(8, 64, 64, 3), fmt)
            res[f"disk_{fmt}"] = case(disk, save, contextlib.nullcontext(), first=first)
            filler.unlink()
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
