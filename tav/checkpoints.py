"""Load Stable Diffusion 1.x/2.x into a :class:`tav.pipeline.Pipeline`, fully offline.

Two sources: a diffusers folder (``model_index.json`` + ``unet/ vae/ text_encoder/ tokenizer/
scheduler/``, including official Tune-A-Video pipelines saved with their 3-D UNet class), or one
single-file checkpoint in the original LDM layout (``.safetensors``; legacy ``.ckpt/.pt/.bin`` only
through ``torch.load(weights_only=True)``, so a file can never run code). Nothing touches the
Hugging Face Hub: configs, tokenizer and scheduler defaults missing from a single file are shipped
in ``tav/assets/`` and sized from the weights.

Prediction type: SD 2.x single files default to ``"v_prediction"`` (the 768-px SD 2.0/2.1 models);
SD 2.x *base* (512 px) checkpoints are epsilon models, so pass ``prediction_type="epsilon"`` for
them. A ComfyUI ``state_dict_for_saving`` dict carries a ``v_pred`` marker, which is honoured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional, TypeVar

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from .inflation import TEMPORAL_KEYS
from .ldm_convert import (
    ASSETS,
    CLIP_L,
    OPEN_CLIP,
    UNET,
    VAE,
    CheckpointError,
    assign_state_dict,
    detect_family,
    no_progress_bars,
    tensors,
    text_encoder_from_ldm,
    unet_from_ldm,
    vae_ddconfig,
    vae_from_ldm,
)
from .pipeline import Pipeline
from .validation import check_finite_tensor
from .weights import fingerprint

__all__ = [
    "CheckpointError",
    "is_tav_checkpoint",
    "load_pipeline",
    "load_unet_state_dict",
    "pipeline_from_ldm_state_dict",
    "read_state_dict",
]

_T = TypeVar("_T")
PREDICTION_TYPES = ("epsilon", "v_prediction")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
#: official Tune-A-Video UNet block names -> the stock diffusers 2-D blocks they inflate
_BLOCKS_3D_TO_2D = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "DownBlock3D": "DownBlock2D",
    "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn",
    "UpBlock3D": "UpBlock2D",
    "CrossAttnUpBlock3D": "CrossAttnUpBlock2D",
}
_PLAIN_WEIGHTS = {
    f"{stem}.{ext}{idx}"
    for stem in ("diffusion_pytorch_model", "model", "pytorch_model")
    for ext in ("safetensors", "bin")
    for idx in ("", ".index.json")
}
_VARIANT_WEIGHTS = re.compile(r"^(?:diffusion_pytorch_model|model|pytorch_model)\.([^.]+)\.(?:safetensors|bin)$")


def load_pipeline(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    prediction_type: Optional[str] = None,
) -> Pipeline:
    """A 2-D (uninflated) pipeline from a diffusers folder or a single-file SD checkpoint, offline.

    ``prediction_type`` overrides what the checkpoint implies ("epsilon" or "v_prediction"). For an
    official Tune-A-Video folder this returns the 2-D part; get the temporal weights with
    :func:`load_unet_state_dict` and load them with :func:`tav.inflation.load_reference_unet`.
    """
    _check_prediction_type(prediction_type)
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        pipe = _load_diffusers_folder(p, prediction_type, dtype)
    else:
        sd = read_state_dict(p)
        pipe = _loading(p, lambda: _pipeline_from_ldm(sd, prediction_type=prediction_type, source=str(p), dtype=dtype))
    return _finish(pipe, device)


def load_reference_pipeline(
    folder: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **inflate_kwargs: Any,
) -> Pipeline:
    """An official Tune-A-Video pipeline folder (e.g. a Hub "Tune-A-Video-library" model) as an
    inflated pipeline carrying its tuned and temporal weights, ready to invert and sample."""
    from .inflation import load_reference_unet

    pipe = load_pipeline(folder, device=device, dtype=dtype)
    return load_reference_unet(pipe, load_unet_state_dict(folder), **inflate_kwargs)


def pipeline_from_ldm_state_dict(
    sd: Mapping[str, Any],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    prediction_type: Optional[str] = None,
    source: str = "",
) -> Pipeline:
    """A pipeline from a full LDM-layout state dict (what ComfyUI's ``state_dict_for_saving`` returns).

    ``sd`` is left untouched and the pipeline owns copies of its tensors, so nothing the caller
    later does to its own model (ComfyUI patching/unpatching weights in place) can leak into it.
    Only ComfyUI's ``v_pred`` marker tells v-prediction apart; its absence proves nothing for SD 2.x,
    so from ComfyUI pass ``prediction_type`` from the model's ``model_type`` (EPS / V_PREDICTION).
    """
    _check_prediction_type(prediction_type)
    pipe = _pipeline_from_ldm(dict(sd), prediction_type=prediction_type, source=source, dtype=dtype)
    return _finish(pipe, device)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or of a legacy pickle loaded with ``weights_only=True``."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {p}")
        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{p} is not a readable .safetensors file ({_first_line(e)}): it may be truncated or not a "
                "safetensors file; download or convert it again"
            ) from None
    if suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"unsupported checkpoint file type {suffix!r} ({p}): use .safetensors (or legacy .ckpt/.pt/.bin)"
        )
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long and suggests weights_only=False; keep only the offending global
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        reason = f"it holds {found.group(1)}" if found else type(e).__name__
        raise CheckpointError(
            f"refused to load {p}: it is a pickle holding Python objects besides tensors, and unpickling "
            "those can run arbitrary code, so it is only read with torch.load(weights_only=True), which "
            f"rejected it ({reason}). Use the model's .safetensors release, or convert the file to "
            ".safetensors with a tool you trust, in an environment you are willing to expose to it."
        ) from None  # torch's own text advises allow-listing the offending global: never show that
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, IndexError, KeyError) as e:
        # any unpickling failure lands here: weights_only=True never executes code, so the cause is damage
        raise CheckpointError(
            f"{p} is not a readable PyTorch checkpoint ({_first_line(e)}): it may be truncated or damaged; "
            "use the model's .safetensors release"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # Lightning-style {"state_dict": ..., "global_step": ...}
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state dict")
    return tensors(obj)


def is_tav_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` (a pipeline folder or its ``unet/``) holds an official Tune-A-Video UNet.

    Those are saved as ``UNet3DConditionModel`` with ``*3D`` block names, a class name diffusers
    now also uses for ModelScope's unrelated text-to-video UNet; the ``UNetMidBlock3DCrossAttn``
    mid-block (or, for safetensors, ``attn_temp`` keys) tells them apart without loading weights.
    """
    unet_dir = _unet_dir(Path(folder))
    cfg_path = unet_dir / "config.json"
    if not cfg_path.is_file():
        return False
    cfg = read_json(cfg_path)
    if cfg.get("_class_name") != "UNet3DConditionModel":
        return False
    if cfg.get("mid_block_type") == "UNetMidBlock3DCrossAttn":
        return True
    for f in sorted(unet_dir.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as h:
                if any(_is_temporal(k) for k in h.keys()):
                    return True
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f} is not a readable .safetensors file ({_first_line(e)})") from None
    return False


def load_unet_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a diffusers UNet folder (``folder/unet`` or ``folder`` itself), temporal keys included.

    Reads safetensors, sharded safetensors (``*.index.json``) or legacy ``.bin`` (weights_only);
    an ``fp16`` variant is used when it is the only copy. Safetensors tensors are memory-mapped from
    the file: load them into a model (which copies) rather than modifying them in place.
    """
    unet_dir = _unet_dir(Path(folder))
    if not unet_dir.is_dir():
        raise FileNotFoundError(f"no UNet folder at {unet_dir}")
    names = {p.name for p in unet_dir.iterdir()}
    for stem in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if stem in names:
            return read_state_dict(unet_dir / stem)
        if f"{stem}.index.json" in names:
            index = read_json(unet_dir / f"{stem}.index.json")
            if not isinstance(index.get("weight_map"), dict):
                raise CheckpointError(f"{unet_dir / (stem + '.index.json')} has no weight_map: it is damaged")
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(index["weight_map"].values())):
                if not isinstance(shard, str) or os.path.basename(shard) != shard:
                    raise CheckpointError(f"{unet_dir}: shard name {shard!r} in the index is not a plain file name")
                sd.update(read_state_dict(unet_dir / shard))
            return sd
    variant = _variant(unet_dir).get("variant")
    if variant:
        for ext in ("safetensors", "bin"):
            if f"diffusion_pytorch_model.{variant}.{ext}" in names:
                return read_state_dict(unet_dir / f"diffusion_pytorch_model.{variant}.{ext}")
    raise CheckpointError(f"no UNet weights (diffusion_pytorch_model.safetensors/.bin) in {unet_dir}")


# -- internals ---------------------------------------------------------------------------------


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else type(e).__name__


def read_json(path: Path) -> dict:
    """A JSON object from a model folder; one message naming the file when it is missing or malformed."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({_first_line(e)}): the model folder is damaged") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a JSON {type(obj).__name__}, expected an object")
    return obj


def _loading(folder: Path, load: Callable[[], _T]) -> _T:
    """Run a diffusers/transformers loader; its many failure types become one message naming the folder."""
    try:
        return load()
    except CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, SafetensorError) as e:
        raise CheckpointError(
            f"cannot load {folder} ({_first_line(e)}): the model folder is incomplete or damaged; "
            "download or convert it again"
        ) from None


def _check_pickles(folder: Path) -> None:
    """Read every legacy pickled weight file of a diffusers sub-folder with ``weights_only=True`` first,
    so a malicious ``.bin`` is refused by our loader (one message) before diffusers/transformers see it."""
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in PICKLE_SUFFIXES:
            read_state_dict(f)


def _check_finite(pipe: Pipeline) -> None:
    """NaN/inf weights give black or noise videos reported as success: refuse them, naming the tensor."""
    for part in ("unet", "vae", "text_encoder"):
        for name, p in getattr(pipe, part).named_parameters():
            check_finite_tensor(
                p.detach(), f"{pipe.source or 'the checkpoint'}: {part} weight {name!r}", hint="the file is corrupted"
            )


def _check_prediction_type(prediction_type: Optional[str]) -> None:
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES} (or None for the checkpoint's), got {prediction_type!r}"
        )


def _is_temporal(key: str) -> bool:
    return any(s in key for s in TEMPORAL_KEYS)


def _unet_dir(folder: Path) -> Path:
    return folder / "unet" if (folder / "unet").is_dir() else folder


def _finish(pipe: Pipeline, device: str | torch.device) -> Pipeline:
    """Move to ``device``, freeze (tuning unfreezes what it trains), fingerprint. Models already have their dtype."""
    _check_finite(pipe)
    for model in (pipe.unet, pipe.vae, pipe.text_encoder):
        model.to(device)
        model.eval()
        model.requires_grad_(False)
    return pipe.replace(base_fingerprint=fingerprint(pipe.unet))


def _tokenizer(sd2: bool, folder: Optional[Path] = None) -> CLIPTokenizer:
    """The folder's tokenizer, else the shipped CLIP BPE (SD 2 pads with "!", id 0)."""
    if folder is not None and folder.is_dir():
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    extra = {"pad_token": "!"} if sd2 else {}
    return CLIPTokenizer.from_pretrained(str(ASSETS / "clip_tokenizer"), local_files_only=True, **extra)


def sd_scheduler_config(prediction_type: str = "epsilon") -> dict:
    """Stable Diffusion's training noise schedule (the shipped ``scheduler_sd.json``)."""
    return {**json.loads((ASSETS / "scheduler_sd.json").read_text()), "prediction_type": prediction_type}


def _scheduler_config(found: Mapping[str, Any], default_prediction: str, override: Optional[str]) -> dict:
    """The shipped SD training-schedule defaults, updated by what the checkpoint says (private keys dropped)."""
    cfg = sd_scheduler_config(default_prediction)
    cfg.update({k: v for k, v in found.items() if not k.startswith("_")})
    if override is not None:
        cfg["prediction_type"] = override
    return cfg


def _variant(model_dir: Path) -> dict[str, str]:
    """``{"variant": "fp16"}`` when a folder only has variant weights (e.g. ``model.fp16.safetensors``)."""
    names = sorted(p.name for p in model_dir.iterdir())
    if any(n in _PLAIN_WEIGHTS for n in names):
        return {}
    variants = [m.group(1) for n in names if (m := _VARIANT_WEIGHTS.match(n))]
    if not variants:
        raise CheckpointError(f"no weights (.safetensors or .bin) in {model_dir}")
    return {"variant": "fp16" if "fp16" in variants else variants[0]}


def _subfolder(folder: Path, name: str) -> Path:
    sub = folder / name
    if not sub.is_dir():
        raise CheckpointError(
            f"{folder} has no {name}/ subfolder: a diffusers Stable Diffusion folder needs unet/, vae/, "
            "text_encoder/ and tokenizer/"
        )
    return sub


def _load_diffusers_folder(folder: Path, prediction_type: Optional[str], dtype: torch.dtype) -> Pipeline:
    if not (folder / "model_index.json").is_file():
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        hint = f"; to load a single-file checkpoint pass the file itself, e.g. {folder / files[0]}" if files else ""
        if is_tav_checkpoint(folder):
            hint = (
                "; this holds only a Tune-A-Video UNet: load its base model with load_pipeline(), then "
                "tav.inflation.load_reference_unet(pipe, load_unet_state_dict(folder))"
            )
        hint = hint or "; pass a diffusers Stable Diffusion folder or a single-file .safetensors checkpoint"
        raise CheckpointError(f"{folder} is not a diffusers pipeline folder (no model_index.json){hint}")
    read_json(folder / "model_index.json")
    for name in ("unet", "vae", "text_encoder"):
        sub = _subfolder(folder, name)
        _check_pickles(sub)
        read_json(sub / "config.json")
    unet_dir = _subfolder(folder, "unet")
    # without accelerate diffusers warns that it loads the slow way; measured on an SD1.5-sized UNet that
    # costs 0.6 s of 2.8 s and no extra memory, so accelerate is not a dependency and the warning is moot
    quiet = {"local_files_only": True, "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
    if is_tav_checkpoint(folder):
        unet = _tav_unet_2d(unet_dir, dtype)
    else:
        unet = _loading(
            unet_dir,
            lambda: UNet2DConditionModel.from_pretrained(
                str(unet_dir), torch_dtype=dtype, **quiet, **_variant(unet_dir)
            ),
        )
    vae_dir = _subfolder(folder, "vae")
    vae = _loading(
        vae_dir,
        lambda: AutoencoderKL.from_pretrained(str(vae_dir), torch_dtype=dtype, **quiet, **_variant(vae_dir)),
    )
    te_dir = _subfolder(folder, "text_encoder")
    with no_progress_bars():
        text_encoder = _loading(
            te_dir,
            lambda: CLIPTextModel.from_pretrained(str(te_dir), local_files_only=True, **_variant(te_dir)).to(dtype),
        )
    sd2 = text_encoder.config.hidden_size == 1024
    sched_path = folder / "scheduler" / "scheduler_config.json"
    found = read_json(sched_path) if sched_path.is_file() else {}
    tokenizer = _loading(folder / "tokenizer", lambda: _tokenizer(sd2, folder / "tokenizer"))
    return Pipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=_scheduler_config(found, "epsilon", prediction_type),
        source=str(folder),
    )


def _tav_unet_2d(unet_dir: Path, dtype: torch.dtype) -> UNet2DConditionModel:
    """The 2-D UNet inside an official Tune-A-Video UNet (3-D block names rewritten, temporal keys left out)."""
    config = read_json(unet_dir / "config.json")
    for field in ("down_block_types", "up_block_types"):
        config[field] = [_block_2d(b) for b in config[field]]
    config["mid_block_type"] = _block_2d(config.get("mid_block_type") or "UNetMidBlock3DCrossAttn")
    config["_class_name"] = "UNet2DConditionModel"
    sd = load_unet_state_dict(unet_dir)
    if not any(_is_temporal(k) for k in sd):
        raise CheckpointError(f"{unet_dir} is a UNet3DConditionModel without Tune-A-Video temporal layers (attn_temp)")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    assign_state_dict(unet, {k: _own(v, dtype) for k, v in sd.items() if not _is_temporal(k)}, "UNet")
    return unet


def _block_2d(name: str) -> str:
    if name not in _BLOCKS_3D_TO_2D:
        raise CheckpointError(f"unknown Tune-A-Video UNet block type {name!r}")
    return _BLOCKS_3D_TO_2D[name]


def _own(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A fresh contiguous copy in ``dtype`` (floats only). Weights are assigned, not copied, into the
    models, and a loaded tensor may alias the caller's model or an mmap of the file (unaligned, too:
    CPU kernels then round differently)."""
    return v.to(dtype=dtype if v.is_floating_point() else v.dtype, copy=True, memory_format=torch.contiguous_format)


def _pipeline_from_ldm(
    sd: dict[str, Any], *, prediction_type: Optional[str], source: str, dtype: torch.dtype
) -> Pipeline:
    """Shared core of the single-file paths. Empties ``sd`` as it copies, so a file's tensors are
    freed one by one instead of all at the end."""
    v_pred_marker = "v_pred" in sd  # ComfyUI's state_dict_for_saving marks v-prediction models
    family = detect_family(tensors(sd))
    wanted = (UNET, VAE, CLIP_L, OPEN_CLIP)
    owned: dict[str, torch.Tensor] = {}
    for k in list(sd):
        v = sd.pop(k)
        if isinstance(v, torch.Tensor) and k.startswith(wanted):
            owned[k] = _own(v, dtype)
    sd = owned
    ddconfig = vae_ddconfig({k[len(VAE) :]: v for k, v in sd.items() if k.startswith(VAE)})
    vae = vae_from_ldm(sd, ddconfig)
    unet = unet_from_ldm(sd, family, ddconfig)
    text_encoder = text_encoder_from_ldm(sd, family, dtype)
    _check_compatible(unet, vae, text_encoder)
    default = "v_prediction" if v_pred_marker or family == "sd2" else "epsilon"
    return Pipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tokenizer(family == "sd2"),
        scheduler_config=_scheduler_config({}, default, prediction_type),
        source=source or f"LDM state dict ({family})",
    )


def _check_compatible(unet: nn.Module, vae: nn.Module, text_encoder: nn.Module) -> None:
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise CheckpointError(
            f"the UNet attends to {unet.config.cross_attention_dim}-wide text embeddings but the text encoder "
            f"produces {text_encoder.config.hidden_size}: the checkpoint mixes parts of different models"
        )
    latent = vae.config.latent_channels
    if unet.config.in_channels != latent or unet.config.out_channels != latent:
        raise CheckpointError(
            f"the UNet takes {unet.config.in_channels} input channels for a {latent}-channel VAE latent: "
            "inpainting / instruct-pix2pix / depth models are not supported, use a text-to-image checkpoint"
        )
