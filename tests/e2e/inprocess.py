"""The start of every in-process e2e script: ComfyUI from the host under test, then the pack as ComfyUI
loads it (a package named ``tav_pack``), so its nodes import comfy exactly as on the server."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def boot_pack(comfy_dir: str) -> ModuleType:
    """Import ComfyUI from ``comfy_dir`` in ``--cpu`` mode (set before its memory manager is imported),
    then load the pack; later ``import tav_pack.nodes...`` statements find it."""
    sys.path.insert(0, comfy_dir)
    os.chdir(comfy_dir)
    from comfy.cli_args import args

    args.cpu = True
    spec = importlib.util.spec_from_file_location(
        "tav_pack", REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    pack = importlib.util.module_from_spec(spec)
    sys.modules["tav_pack"] = pack
    spec.loader.exec_module(pack)
    return pack
