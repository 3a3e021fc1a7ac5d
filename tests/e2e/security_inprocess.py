"""The node code's own confinement checks, below ComfyUI's list validation, against the live server's folders.

Run by ``test_e2e_security.py`` in a subprocess with the host's Python (TAV_COMFY_PYTHON), as ComfyUI
would run the nodes (newer hosts import dependencies of their own). Reads a JSON list of
``[kind, value]`` from stdin (kind: video, path, tuned, checkpoint) and prints ``RESULT`` and a JSON list
of ``[real path or null, message or null]``, one per value.

Usage: python security_inprocess.py --comfy-dir DIR --root SERVER_ROOT < cases.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from inprocess import boot_pack


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy-dir", required=True)
    ap.add_argument("--root", required=True, type=Path)
    args = ap.parse_args()
    cases = json.load(sys.stdin)
    boot_pack(args.comfy_dir)
    import folder_paths

    folder_paths.set_input_directory(str(args.root / "input"))
    folder_paths.set_output_directory(str(args.root / "output"))
    folder_paths.set_temp_directory(str(args.root / "temp"))
    for kind in ("checkpoints", "diffusers", "tuneavideo"):
        exts = folder_paths.folder_names_and_paths.get(kind, ([], {".safetensors"}))[1]
        folder_paths.folder_names_and_paths[kind] = ([str(args.root / "models" / kind)], exts)
    from tav_pack.nodes import files, model, video

    def one(kind: str, value: str) -> tuple[Optional[str], Optional[str]]:
        if kind in ("video", "path"):
            return video.resolve_video(value, None) if kind == "video" else video.resolve_video("x.mp4", value)
        if kind == "checkpoint":
            return model.resolve_checkpoint(value), None
        try:
            return files.required_model_file("tuneavideo", value), None
        except ValueError as e:
            return None, str(e)

    print("RESULT " + json.dumps([one(kind, value) for kind, value in cases]))


if __name__ == "__main__":
    main()
