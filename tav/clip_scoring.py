"""A CLIP model for scoring edits: a transformers ``CLIPModel`` folder, checked, loaded offline, never unpickled.

Why its own module: the metrics (:mod:`tav.metrics`) need only "embed these frames" and "embed this
prompt"; everything that makes those embeddings identical to the benchmark's lives here. The
benchmark (LOVEU-TGVE 2023, ``scripts/run_eval.py``) feeds frames to ``CLIPImageProcessor``:
shortest side resized to the model's size with bicubic (antialiased) resampling, centre crop,
``/255``, CLIP mean/std. :func:`preprocess` does the same with torch, on the model's device.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import torch

from .progress import ProgressFn, report
from .validation import InputError

#: ``CLIPImageProcessor``'s defaults (OpenAI's CLIP training statistics), used when a folder has no preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
BUNDLED_TOKENIZER = os.path.join(os.path.dirname(__file__), "assets", "clip_tokenizer")


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How frames become pixel values: ``CLIPImageProcessor``'s settings."""

    size: int  # shortest side after resizing
    crop: int  # centre-crop side
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


@dataclasses.dataclass
class ScoringClip:
    model: Any  # transformers.CLIPModel
    tokenizer: Any
    preprocess: Preprocess
    name: str

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def logit_scale(self) -> float:
        """``exp(logit_scale)``: 100 for OpenAI's CLIP; PickScore's model card multiplies by it."""
        return float(self.model.logit_scale.detach().float().exp())


def read_config(path: str) -> dict:
    """The folder's config.json when it is a transformers CLIPModel with safetensors weights; refused otherwise.

    Reads no weights: the CLI and the node run it before any compute."""
    if not os.path.isdir(path):
        raise InputError(
            f"CLIP model folder not found: {path!r} (a transformers CLIPModel folder: config.json + model.safetensors)"
        )
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise InputError(f"{path!r} has no config.json: not a transformers CLIPModel folder")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{cfg_path!r} is not readable JSON ({' '.join(str(e).split())[:120]})") from None
    kind = cfg.get("model_type") if isinstance(cfg, dict) else None
    if kind != "clip":
        raise InputError(
            f"{path!r} holds a {kind!r} model, not a CLIPModel (a text and an image tower, model_type 'clip'): "
            "use e.g. a local copy of openai/clip-vit-large-patch14 or the PickScore_v1 folder"
        )
    if not any(os.path.isfile(os.path.join(path, w)) for w in WEIGHTS):
        pickled = [p for p in PICKLED if os.path.isfile(os.path.join(path, p))]
        if pickled:
            raise InputError(
                f"{path!r} holds only {pickled[0]} (a pickle, which is never loaded here): convert it once to "
                "model.safetensors, e.g. CLIPModel.from_pretrained(folder).save_pretrained(folder) in a trusted "
                "Python session"
            )
        raise InputError(f"{path!r} has no model.safetensors: not a usable CLIPModel folder")
    return cfg


def preprocess_settings(path: str, cfg: dict) -> Preprocess:
    """The folder's preprocessor_config.json (shortest_edge, crop_size, mean, std), else CLIP's defaults at the
    vision tower's size."""
    size = int(cfg.get("vision_config", {}).get("image_size", 224))
    found: dict = {}
    pp = os.path.join(path, "preprocessor_config.json")
    if os.path.isfile(pp):
        try:
            with open(pp, encoding="utf-8") as f:
                found = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"{pp!r} is not readable JSON ({' '.join(str(e).split())[:120]})") from None
    short = found.get("size", size)
    short = short.get("shortest_edge", size) if isinstance(short, dict) else short
    crop = found.get("crop_size", short)
    crop = crop.get("height", short) if isinstance(crop, dict) else crop
    mean = tuple(found.get("image_mean", CLIP_MEAN))
    std = tuple(found.get("image_std", CLIP_STD))
    return Preprocess(int(short), int(crop), mean, std)  # type: ignore[arg-type]


def load_clip(path: str, device: torch.device, dtype: Optional[torch.dtype] = None) -> ScoringClip:
    """Load a CLIPModel folder offline from safetensors (fp32 on the CPU; bf16/fp16 on CUDA unless ``dtype``).

    The weights load in their stored type and are cast after (``dtype=``/``torch_dtype=`` differ across
    transformers 4.x and 5)."""
    from safetensors import SafetensorError
    from transformers import CLIPModel, CLIPTokenizer

    from .tuning import half_dtype

    cfg = read_config(path)
    if dtype is None:
        dtype = half_dtype(device) if device.type == "cuda" else torch.float32
    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True, use_safetensors=True).to(dtype)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise InputError(f"cannot load the CLIP model in {path!r}: {' '.join(str(e).split())[:300]}") from None
    has_tok = any(os.path.isfile(os.path.join(path, t)) for t in TOKENIZER_FILES)
    tokenizer = CLIPTokenizer.from_pretrained(path if has_tok else BUNDLED_TOKENIZER, local_files_only=True)
    return ScoringClip(
        model.to(device).eval().requires_grad_(False),
        tokenizer,
        preprocess_settings(path, cfg),
        os.path.basename(os.path.normpath(path)),
    )


def preprocess(frames: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """``[F, H, W, 3]`` in 0..1 -> CLIP pixel values ``[F, 3, crop, crop]``, as ``CLIPImageProcessor`` does.

    Frames are read as 8-bit first (as saved frames are), resized so the shortest side is ``pp.size``
    (bicubic with antialiasing, the longer side ``int(size * long / short)``, rounded to 8-bit like a
    resized uint8 image), centre-cropped at ``int((side - crop) / 2)``, then normalised."""
    x = (frames[..., :3].float().clamp(0, 1) * 255).round().movedim(-1, 1)
    h, w = x.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(pp.size * long / short)
    new_hw = (pp.size, new_long) if h <= w else (new_long, pp.size)
    if new_hw != (h, w):
        x = torch.nn.functional.interpolate(x, size=new_hw, mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp(0, 255).round()
    top, left = int((new_hw[0] - pp.crop) / 2), int((new_hw[1] - pp.crop) / 2)
    if top < 0 or left < 0:
        raise InputError(f"frames of {w}x{h} are smaller than the model's crop {pp.crop} after resizing")
    x = x[..., top : top + pp.crop, left : left + pp.crop] / 255.0
    mean = torch.tensor(pp.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _features(out: Any) -> torch.Tensor:
    """The projected embedding: transformers 5 returns an output whose ``pooler_output`` it is, 4.x the tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def embed_images(
    clip: ScoringClip,
    frames: torch.Tensor,
    batch_size: int = 16,
    callback: Optional[ProgressFn] = None,
    done: int = 0,
    total: Optional[int] = None,
) -> torch.Tensor:
    """Unit-norm image embeddings ``[F, D]`` (float32), ``batch_size`` frames at a time on the model's device.

    ``callback(done + frames so far, total)`` after each batch: progress, and Cancel by raising."""
    total = len(frames) if total is None else total
    dtype = clip.model.visual_projection.weight.dtype
    out = []
    for i in range(0, len(frames), batch_size):
        pixels = preprocess(frames[i : i + batch_size].to(clip.device), clip.preprocess).to(dtype)
        feats = _features(clip.model.get_image_features(pixel_values=pixels)).float()
        out.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
        report(callback, done + min(i + batch_size, len(frames)), total)
    return torch.cat(out)


@torch.no_grad()
def embed_text(clip: ScoringClip, prompt: str) -> torch.Tensor:
    """Unit-norm text embedding ``[D]`` (float32); a prompt past the text window is truncated with a warning,
    as the benchmark's processor truncates at 77 tokens."""
    from .pipeline import _warn_if_truncated

    max_length = min(clip.tokenizer.model_max_length, clip.model.config.text_config.max_position_embeddings)
    _warn_if_truncated(clip.tokenizer, prompt, max_length)
    tok = clip.tokenizer([prompt], padding=True, max_length=max_length, truncation=True, return_tensors="pt")
    feats = _features(
        clip.model.get_text_features(
            input_ids=tok.input_ids.to(clip.device), attention_mask=tok.attention_mask.to(clip.device)
        )
    ).float()
    return torch.nn.functional.normalize(feats, dim=-1)[0].cpu()
