"""Pure logic of the native ComfyUI path: tuned weights, key mapping, noise convention, schedule.

The native path turns a tuned model into a patched stock ComfyUI ``MODEL`` and the inverted noise
into a stock ``LATENT`` (the glue is in ``nodes/native.py``). What it shares with ``tav`` lives
here, free of ComfyUI imports, so it can be unit-tested and reused:

- :class:`TunedWeights`: the tensors tuning changed or inflation added, with how the model was
  inflated (GroupNorm over all frames or per frame, sparse-causal or per-frame attention), from a
  tuned :class:`~tav.pipeline.Pipeline` or a ``.safetensors`` written by :func:`tav.weights.save_tuned`;
- key mapping from the reference's diffusers keys to ComfyUI's (openaimodel) module paths, given
  the diffusers->ComfyUI map ComfyUI itself builds (``unet_to_diffusers`` in its utils module);
- the noise convention: the reference's DDIM works on VP latents ``sqrt(a) x0 + sqrt(1-a) eps``
  scaled by the VAE factor; ComfyUI's samplers on ``x0 + sigma eps`` and its LATENT is unscaled;
- the reference's DDIM schedule as ComfyUI SIGMAS, exactly, for any step count.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from typing import Optional

import torch
from safetensors import safe_open

from .attention import ATTENTION_MODES
from .ddim import ddim_timesteps
from .inflation import NORMS, TEMPORAL_KEYS, is_inflated
from .pipeline import Pipeline
from .tuning import DEFAULT_TRAINABLE, trainable_names
from .weights import base_fingerprint, fingerprint_items, read_metadata

#: the pieces the native patch is made of; each can be left out for negative-control tests
PIECES = ("sparse_causal", "temporal", "video_norm", "projections")


@dataclasses.dataclass
class TunedWeights:
    """What a tuned model adds to its base: tensors under the reference's diffusers keys, and how.

    ``tensors`` holds the trained projections (e.g. ``...attn1.to_q.weight``) and every temporal
    tensor (``...attn_temp.*``, ``...norm_temp.*``). ``fingerprint`` names the base model.
    """

    tensors: dict[str, torch.Tensor]
    norm: str = "video"
    attention: str = "sparse_causal"
    fingerprint: str = ""
    source: str = ""
    prediction_type: str = "epsilon"
    frames: int = 0

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES or self.norm not in NORMS:
            raise ValueError(
                f"unknown attention/norm {self.attention!r}/{self.norm!r}: attention is one of"
                f" {', '.join(ATTENTION_MODES)}, norm one of {', '.join(NORMS)}"
            )

    @property
    def temporal(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.tensors.items() if _is_temporal(k)}

    @property
    def projections(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.tensors.items() if not _is_temporal(k)}

    @property
    def temporal_bytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.temporal.values())


def _is_temporal(key: str) -> bool:
    return any(s in key for s in TEMPORAL_KEYS)


def tuned_from_pipeline(pipe: Pipeline) -> TunedWeights:
    """The tuned tensors of an inflated pipeline (from Tune, Load Tuned or Inflate), detached on the CPU."""
    if not is_inflated(pipe):
        raise ValueError("the pipeline is not inflated: connect Tune, Load Tuned or Inflate")
    inner = pipe.unet.unet
    modules = pipe.info.get("trainable_modules") or DEFAULT_TRAINABLE
    names = set(trainable_names(inner, modules))
    tensors = {k: v.detach().to("cpu").clone() for k, v in inner.state_dict().items() if k in names or _is_temporal(k)}
    return TunedWeights(
        tensors=tensors,
        norm=pipe.unet.norm,
        attention=pipe.unet.attention,
        fingerprint=base_fingerprint(pipe),
        source=pipe.source,
        prediction_type=pipe.prediction_type,
        frames=int(pipe.info.get("frames") or 0),
    )


def tuned_from_file(path: str | os.PathLike) -> TunedWeights:
    """Tuned weights saved by :func:`tav.weights.save_tuned` (``models/tuneavideo``), never unpickled."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tuned weights not found: {path}")
    meta = read_metadata(path)
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return TunedWeights(
        tensors=tensors,
        norm=meta["norm"],  # read_metadata refuses a file without these
        attention=meta["attention"],
        fingerprint=meta["base_fingerprint"],
        source=meta.get("base_source", ""),
        prediction_type=meta.get("prediction_type", "epsilon"),
        frames=int(meta.get("frames") or 0),
    )


# --- key mapping ------------------------------------------------------------------------------

_BLOCK_RE = re.compile(r"^(.*\.transformer_blocks\.\d+)\.")


def block_of(key: str) -> str:
    """The transformer-block path a key belongs to (``...transformer_blocks.N``)."""
    m = _BLOCK_RE.match(key)
    if not m:
        raise ValueError(f"{key} is not inside a transformer block")
    return m.group(1)


def block_map(d2c: Mapping[str, str]) -> dict[str, str]:
    """Transformer-block paths, diffusers -> ComfyUI, derived from the full weight-key map."""
    out: dict[str, str] = {}
    for d, c in d2c.items():
        if ".transformer_blocks." in d and ".transformer_blocks." in c:
            out[block_of(d)] = block_of(c)
    return out


def comfy_key(key: str, d2c: Mapping[str, str], blocks: Optional[Mapping[str, str]] = None) -> str:
    """ComfyUI's key (no ``diffusion_model.`` prefix) for a reference diffusers key.

    Keys ComfyUI's model has go through its own map; the temporal keys it lacks keep their
    transformer block's mapped path plus their tail (``attn_temp.to_q.weight``...).
    """
    if key in d2c:
        return d2c[key]
    if _is_temporal(key):
        blocks = block_map(d2c) if blocks is None else blocks
        block = block_of(key)
        if block in blocks:
            return blocks[block] + key[len(block) :]
    raise KeyError(f"no ComfyUI key for {key}: the tuned weights do not match this model's architecture")


def comfy_temporal(temporal: Mapping[str, torch.Tensor], d2c: Mapping[str, str]) -> dict[str, dict[str, torch.Tensor]]:
    """``{comfy block path: {"attn_temp.to_q.weight": t, ...}}`` for the temporal tensors."""
    blocks = block_map(d2c)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in temporal.items():
        block = block_of(k)
        if block not in blocks:
            raise KeyError(f"no ComfyUI transformer block for {block}: the tuned weights do not match this model")
        out.setdefault(blocks[block], {})[k[len(block) + 1 :]] = v
    return out


def attn1_patch_id(comfy_block: str) -> tuple[str, int, int]:
    """ComfyUI's ``(block_name, number, transformer_index)`` of a transformer block path.

    ``input_blocks.1.1.transformer_blocks.0`` -> ``("input", 1, 0)``; the middle block is
    ``("middle", 0, i)``; the index counts blocks within one SpatialTransformer, as ComfyUI's
    ``block_index``.
    """
    m = re.match(r"^(input|output)_blocks\.(\d+)\.\d+\.transformer_blocks\.(\d+)$", comfy_block)
    if m:
        return m.group(1), int(m.group(2)), int(m.group(3))
    m = re.match(r"^middle_block\.\d+\.transformer_blocks\.(\d+)$", comfy_block)
    if m:
        return "middle", 0, int(m.group(1))
    raise ValueError(f"unexpected transformer block path {comfy_block}")


_VIDEO_NORM_RE = re.compile(r"(\.resnets\.\d+\.norm[12]|^conv_norm_out)\.weight$")


def video_norm_paths(d2c: Mapping[str, str]) -> list[str]:
    """ComfyUI module paths of the GroupNorms the reference pools over frames.

    Those are the resnets' ``norm1``/``norm2`` and ``conv_norm_out`` (what
    :func:`tav.inflation.inflate` replaces), not the transformers' input norms.
    """
    paths = {c[: -len(".weight")] for d, c in d2c.items() if _VIDEO_NORM_RE.search(d)}
    return sorted(paths)


def comfy_fingerprint(comfy_weights: Mapping[str, torch.Tensor], d2c: Mapping[str, str]) -> str:
    """:func:`tav.weights.fingerprint` of a ComfyUI UNet state dict (keys without ``diffusion_model.``).

    The same weights give the same fingerprint as the diffusers UNet a pipeline holds. ComfyUI's
    map names every possible key (e.g. shortcut convs a block may not have): only those the model
    has count, which are exactly the diffusers UNet's keys for the same architecture.
    """
    items = [(d, comfy_weights[c]) for d, c in d2c.items() if c in comfy_weights]
    return fingerprint_items(sorted(items))


# --- noise convention and schedule -----------------------------------------------------------


def sigmas_from_alphas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ComfyUI's discrete sigma table: ``sqrt((1 - a) / a)`` per training timestep."""
    a = alphas_cumprod.double()
    return ((1 - a) / a).sqrt()


def reference_sigmas(sigma_table: torch.Tensor, steps: int, offset: int = 1) -> torch.Tensor:
    """The reference DDIM schedule as SIGMAS: sigma at each DDIM timestep, then sigma(t=0).

    The reference (``set_alpha_to_one=False``) ends at alpha_bar_0, not at a clean sample, so the
    last sigma is ``sigma_table[0]`` (~0.029 for SD), not 0. ``steps + 1`` values, strictly
    descending; only ``steps`` where the last timestep already is t=0 (1000 of 1000), because the
    step from t=0 to alpha_bar_0 changes nothing and a zero-length step breaks multistep samplers.
    """
    n_train = int(sigma_table.shape[0])
    ts = ddim_timesteps(n_train, steps, offset)
    idx = torch.tensor(ts if ts[-1] == 0 else ts + [0])
    return sigma_table.double()[idx].float()


def first_sigma(sigma_table: torch.Tensor, steps: int, offset: int = 1) -> float:
    """sigma of the first sampling timestep: the noise level DDIM inversion with ``steps`` ends at."""
    return float(reference_sigmas(sigma_table, steps, offset)[0])


def vp_to_comfy_latent(latents: torch.Tensor, sigma: float, scale_factor: float) -> torch.Tensor:
    """Reference VP latents ``[1, C, F, h, w]`` (VAE-scaled) at noise ``sigma`` -> LATENT samples ``[F, C, h, w]``.

    ComfyUI samples ``x0 + sigma eps`` = VP latents / sqrt(alpha_bar) = VP * sqrt(1 + sigma^2), and
    its LATENT is unscaled (the model multiplies by ``scale_factor`` on the way in).
    """
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise ValueError(f"expected one video's latents [1, C, F, h, w], got {tuple(latents.shape)}")
    x = latents[0].permute(1, 0, 2, 3).double() * (1 + sigma**2) ** 0.5 / scale_factor
    return x.float().contiguous()


def comfy_latent_to_vp(samples: torch.Tensor, sigma: float, scale_factor: float) -> torch.Tensor:
    """The inverse of :func:`vp_to_comfy_latent`: LATENT ``[F, C, h, w]`` -> VP latents ``[1, C, F, h, w]``."""
    if samples.ndim != 4:
        raise ValueError(f"expected LATENT samples [frames, C, h, w], got {tuple(samples.shape)}")
    x = samples.double() * scale_factor / (1 + sigma**2) ** 0.5
    return x.permute(1, 0, 2, 3).unsqueeze(0).float().contiguous()


def temporal_param_count(tensors: Iterable[torch.Tensor]) -> int:
    """Parameters the temporal layers add (what the patched MODEL's size accounts for)."""
    return sum(int(t.numel()) for t in tensors)
