"""ComfyUI adapters over :mod:`tav`, declared with the V3 node schema through the frozen ``comfy_api.v0_0_2``.

Imported by the pack's ``__init__.py``, which hands ``comfy_entrypoint`` to ComfyUI.
"""

from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io

from .common import register_folders as register_tuned_folder
from .context_windows import TAV_ContextWindows
from .control import TAV_ControlNet
from .metrics import TAV_ScoreEdit, register_clip_folder
from .model import TAV_FromComfyModels, TAV_Inflate, TAV_LoadCheckpoint, TAV_LoadTuned, TAV_SaveTuned
from .native import TAV_ApplyToModel, TAV_DDIMSigmas, TAV_InvertedToLatent
from .sample import TAV_DDIMInvert, TAV_Sample
from .tune import TAV_Tune
from .video import TAV_LoadVideo, TAV_SaveVideo

#: every node of the pack, in menu order; node ids and input names never change (saved workflows name them)
NODES: list[type[io.ComfyNode]] = [
    TAV_LoadVideo,
    TAV_LoadCheckpoint,
    TAV_FromComfyModels,
    TAV_Inflate,
    TAV_Tune,
    TAV_SaveTuned,
    TAV_LoadTuned,
    TAV_DDIMInvert,
    TAV_Sample,
    TAV_ControlNet,
    TAV_SaveVideo,
    TAV_ApplyToModel,
    TAV_InvertedToLatent,
    TAV_DDIMSigmas,
    TAV_ContextWindows,
    TAV_ScoreEdit,
]


def register_folders() -> None:
    """Register the pack's model folders: models/tuneavideo and models/clip_scoring."""
    register_tuned_folder()
    register_clip_folder()


class TuneAVideoExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> TuneAVideoExtension:
    """ComfyUI's V3 entry point: the extension that lists the pack's nodes."""
    return TuneAVideoExtension()


def node_classes() -> dict[str, type[io.ComfyNode]]:
    """``{node id: class}``, for tools that read the pack without ComfyUI's loader (scripts/make_workflows.py)."""
    return {cls.GET_SCHEMA().node_id: cls for cls in NODES}


__all__ = ["NODES", "comfy_entrypoint", "node_classes", "register_folders"]
