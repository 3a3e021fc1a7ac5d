"""ComfyUI entry point of the Tune-A-Video node pack: registers models/tuneavideo and hands ComfyUI the
V3 ``comfy_entrypoint`` that lists the nodes.

Outside ComfyUI (no ``folder_paths`` module) importing this file is harmless: it defines no nodes.
"""

from __future__ import annotations

import os
import sys

try:
    import folder_paths  # noqa: F401 - only exists inside ComfyUI
except ImportError:
    folder_paths = None

if folder_paths is not None:
    _here = os.path.dirname(os.path.abspath(__file__))
    if _here not in sys.path:
        sys.path.append(_here)  # makes the bundled core importable as `tav`
    from .nodes import comfy_entrypoint, register_folders

    register_folders()
    __all__ = ["comfy_entrypoint"]
