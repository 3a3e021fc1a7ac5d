"""ComfyUI entry point of the Tune-A-Video node pack: registers the nodes and models/tuneavideo.

Outside ComfyUI (no ``folder_paths`` module) importing this file is harmless: the mappings are empty.
"""

from __future__ import annotations

import os
import sys

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

try:
    import folder_paths  # noqa: F401 - only exists inside ComfyUI
except ImportError:
    folder_paths = None

if folder_paths is not None:
    _here = os.path.dirname(os.path.abspath(__file__))
    if _here not in sys.path:
        sys.path.append(_here)  # makes the bundled core importable as `tav`
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, register_folders

    register_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
