"""ComfyUI adapters over :mod:`tav` (V1 node classes). Imported by the pack's ``__init__.py``."""

from __future__ import annotations

from .common import register_folders as register_tuned_folder
from .context_windows import TAV_ContextWindows
from .control import TAV_ControlNet
from .metrics import TAV_ScoreEdit, register_clip_folder
from .model import TAV_FromComfyModels, TAV_Inflate, TAV_LoadCheckpoint, TAV_LoadTuned, TAV_SaveTuned
from .native import TAV_ApplyToModel, TAV_DDIMSigmas, TAV_InvertedToLatent
from .sample import TAV_DDIMInvert, TAV_Sample
from .tune import TAV_Tune
from .video import TAV_LoadVideo, TAV_SaveVideo

NODE_CLASS_MAPPINGS = {
    "TAV_LoadVideo": TAV_LoadVideo,
    "TAV_LoadCheckpoint": TAV_LoadCheckpoint,
    "TAV_FromComfyModels": TAV_FromComfyModels,
    "TAV_Inflate": TAV_Inflate,
    "TAV_Tune": TAV_Tune,
    "TAV_SaveTuned": TAV_SaveTuned,
    "TAV_LoadTuned": TAV_LoadTuned,
    "TAV_DDIMInvert": TAV_DDIMInvert,
    "TAV_Sample": TAV_Sample,
    "TAV_ControlNet": TAV_ControlNet,
    "TAV_SaveVideo": TAV_SaveVideo,
    "TAV_ApplyToModel": TAV_ApplyToModel,
    "TAV_InvertedToLatent": TAV_InvertedToLatent,
    "TAV_DDIMSigmas": TAV_DDIMSigmas,
    "TAV_ContextWindows": TAV_ContextWindows,
    "TAV_ScoreEdit": TAV_ScoreEdit,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "TAV_LoadVideo": "Load Video (Tune-A-Video)",
    "TAV_LoadCheckpoint": "Load Checkpoint (Tune-A-Video)",
    "TAV_FromComfyModels": "From ComfyUI Models (Tune-A-Video)",
    "TAV_Inflate": "Inflate to Video Model (Tune-A-Video)",
    "TAV_Tune": "Tune on Video (Tune-A-Video)",
    "TAV_SaveTuned": "Save Tuned Weights (Tune-A-Video)",
    "TAV_LoadTuned": "Load Tuned Weights (Tune-A-Video)",
    "TAV_DDIMInvert": "DDIM Invert (Tune-A-Video)",
    "TAV_Sample": "Sample Video (Tune-A-Video)",
    "TAV_ControlNet": "ControlNet per Frame (Tune-A-Video)",
    "TAV_SaveVideo": "Save Video (Tune-A-Video)",
    "TAV_ApplyToModel": "Tune-A-Video → MODEL",
    "TAV_InvertedToLatent": "Inverted Noise → LATENT (Tune-A-Video)",
    "TAV_DDIMSigmas": "DDIM Sigmas (Tune-A-Video)",
    "TAV_ContextWindows": "Context Windows (Tune-A-Video)",
    "TAV_ScoreEdit": "Score Edit (Tune-A-Video)",
}


def register_folders() -> None:
    """Register the pack's model folders: models/tuneavideo and models/clip_scoring."""
    register_tuned_folder()
    register_clip_folder()


__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "register_folders"]
