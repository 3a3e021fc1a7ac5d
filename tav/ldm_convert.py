"""Original (LDM / CompVis) Stable Diffusion 1.x/2.x state dicts -> diffusers models, offline.

diffusers' ``from_single_file`` fetches a config from the Hub for every component. Here the
architecture is inferred from the tensors' names and shapes instead, so nothing is downloaded and
reduced-size checkpoints (the random-weight models tests and the ComfyUI host use) load as well as
real ones. The key renaming itself is delegated to ``diffusers.loaders.single_file_utils``.

Layouts understood (``sd`` is one flat dict, as a ``.safetensors`` file or ComfyUI's
``state_dict_for_saving`` gives it):

- UNet ``model.diffusion_model.*`` (openaimodel: input/middle/output blocks);
- VAE ``first_stage_model.*``;
- SD 1.x text encoder, CLIP ViT-L in Hugging Face layout: ``cond_stage_model.transformer.text_model.*``
  (older files omit ``text_model.``);
- SD 2.x text encoder, OpenCLIP ViT-H: ``cond_stage_model.model.*``. SD 2 conditions on the
  penultimate layer, so the last residual block is dropped (as diffusers' SD 2 configs do).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel
from transformers.utils import logging as hf_logging

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP_L = "cond_stage_model.transformer."
OPEN_CLIP = "cond_stage_model.model."
ASSETS = Path(__file__).resolve().parent / "assets"
SD_VAE_SCALE = 0.18215


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says what was found and what to do."""


def tensors(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Only the tensor entries (ComfyUI's dicts may carry metadata values)."""
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def key_sample(keys: Any, n: int = 6) -> str:
    """A few representative key prefixes, for error messages."""
    seen: list[str] = []
    for k in sorted(keys):
        head = ".".join(k.split(".")[:3])
        if head not in seen:
            seen.append(head)
        if len(seen) >= n:
            break
    return ", ".join(seen) if seen else "(no tensors)"


def _unsupported(sd: Mapping[str, Any], why: str) -> CheckpointError:
    return CheckpointError(
        f"only Stable Diffusion 1.x/2.x checkpoints are supported; {why}. Found keys like: {key_sample(sd)} "
        f"({len(sd)} tensors)"
    )


def detect_family(sd: Mapping[str, torch.Tensor]) -> str:
    """``"sd1"`` (CLIP ViT-L text encoder) or ``"sd2"`` (OpenCLIP ViT-H); anything else is refused."""
    keys = list(sd)
    if any(k.startswith("conditioner.") for k in keys) or f"{UNET}label_emb.0.0.weight" in sd:
        raise _unsupported(
            sd, "this looks like SDXL (or another class-conditioned UNet), which Tune-A-Video here does not handle"
        )
    if not any(k.startswith(UNET + "input_blocks.") for k in keys):
        if any(k.startswith(UNET) for k in keys):
            raise _unsupported(sd, "its model.diffusion_model.* is not an SD UNet (no input_blocks)")
        if any(k.startswith(("down_blocks.", "unet.", "lora_", "lora.")) or ".lora_" in k for k in keys):
            raise _unsupported(sd, "this is not a full single-file checkpoint (a diffusers-format UNet, or a LoRA)")
        raise _unsupported(sd, "there is no UNet (model.diffusion_model.*)")
    if not any(k.startswith(VAE) for k in keys):
        raise CheckpointError(
            "the checkpoint has a UNet but no VAE (first_stage_model.*): use a full SD checkpoint, not a UNet-only file"
        )
    if any(k.startswith(OPEN_CLIP + "transformer.resblocks.") for k in keys):
        return "sd2"
    if any(k.startswith(CLIP_L) for k in keys):
        return "sd1"
    raise CheckpointError(
        "the checkpoint has no text encoder (cond_stage_model.transformer.* for SD 1.x or "
        "cond_stage_model.model.* for SD 2.x): use a full SD checkpoint, not a UNet/VAE-only file"
    )


def _sub(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _indices(keys: Any, prefix: str) -> list[int]:
    """Sorted integer children of ``prefix`` (``input_blocks.`` -> [0, 1, ...])."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pat.match(k))})


def _depth(u: Mapping[str, torch.Tensor], prefix: str) -> Optional[int]:
    """Transformer depth of the SpatialTransformer at ``prefix`` (0 is legal), None if there is none."""
    if f"{prefix}proj_in.weight" not in u:
        return None
    return len(_indices(u, f"{prefix}transformer_blocks."))


def _uniform(values: list[Any], what: str) -> Any:
    if any(v != values[0] for v in values):
        raise CheckpointError(f"unsupported UNet layout: {what} differs within a level ({values})")
    return values[0]


def _unet_layout(u: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Read the openaimodel hyper-parameters off the UNet's keys and shapes."""
    try:
        mc, in_ch = u["input_blocks.0.0.weight"].shape[:2]
        out_ch = u["out.2.weight"].shape[0]
        levels: list[list[tuple[int, Optional[int]]]] = [[]]
        for i in _indices(u, "input_blocks.")[1:]:
            if f"input_blocks.{i}.0.op.weight" in u:
                levels.append([])
                continue
            ch = u[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0]
            levels[-1].append((ch, _depth(u, f"input_blocks.{i}.1.")))
    except KeyError as e:
        raise CheckpointError(f"unsupported UNet layout: expected tensor model.diffusion_model.{e.args[0]}") from e
    if any(not lv for lv in levels):
        raise CheckpointError("unsupported UNet layout: a resolution level without ResBlocks")
    nrb = _uniform([len(lv) for lv in levels], "the number of ResBlocks per level")
    chans = [_uniform([c for c, _ in lv], "the channel count") for lv in levels]
    down_depth = [_uniform([d for _, d in lv], "the transformer depth") for lv in levels]
    n_levels = len(levels)
    out_blocks = _indices(u, "output_blocks.")
    if len(out_blocks) != n_levels * (nrb + 1):
        raise CheckpointError(
            f"unsupported UNet layout: {len(out_blocks)} output blocks for {n_levels} levels of {nrb} ResBlocks"
        )
    up_depth = [
        _uniform(
            [_depth(u, f"output_blocks.{lvl * (nrb + 1) + j}.1.") for j in range(nrb + 1)], "the transformer depth"
        )
        for lvl in range(n_levels)
    ]
    mids = _indices(u, "middle_block.")
    if not mids:
        mid: Optional[str] = None
        mid_depth = None
    elif mids == [0]:
        mid, mid_depth = "UNetMidBlock2D", None
    elif mids == [0, 1, 2] and _depth(u, "middle_block.1.") is not None:
        mid, mid_depth = "UNetMidBlock2DCrossAttn", _depth(u, "middle_block.1.")
    else:
        raise CheckpointError(f"unsupported UNet layout: middle block of {len(mids)} modules without a transformer")
    to_k = next((v for k, v in u.items() if k.endswith("attn2.to_k.weight")), None)
    proj_in = next((v for k, v in u.items() if k.endswith("proj_in.weight")), None)
    for c in chans:
        if c % mc:
            raise CheckpointError(f"unsupported UNet layout: level width {c} is not a multiple of {mc}")
    return {
        "model_channels": int(mc),
        "in_channels": int(in_ch),
        "out_channels": int(out_ch),
        "channel_mult": [c // mc for c in chans],
        "num_res_blocks": nrb,
        "down_depth": down_depth,
        "up_depth": up_depth,  # decoder order: innermost level first
        "mid": mid,
        "mid_depth": mid_depth,
        "context_dim": int(to_k.shape[1]) if to_k is not None else None,
        "linear": proj_in is not None and proj_in.ndim == 2,
    }


def vae_ddconfig(v: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The LDM ``ddconfig`` of a KL autoencoder, read off its keys and shapes."""
    try:
        ch, in_ch = v["encoder.conv_in.weight"].shape[:2]
        downs = _indices(v, "encoder.down.")
        mult = [v[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in downs]
        nrb = len(_indices(v, "encoder.down.0.block."))
        z = v["decoder.conv_in.weight"].shape[1]
        out_ch = v["decoder.conv_out.weight"].shape[0]
        enc_out = v["encoder.conv_out.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"unsupported VAE layout: expected tensor first_stage_model.{e.args[0]}") from e
    if enc_out != 2 * z:
        raise CheckpointError(f"unsupported VAE: encoder outputs {enc_out} channels for {z} latent channels (not KL)")
    if any(k.startswith("encoder.down.") and ".attn." in k for k in v):
        raise CheckpointError("unsupported VAE: attention inside the down blocks (only the mid-block may attend)")
    if any(len(_indices(v, f"encoder.down.{i}.block.")) != nrb for i in downs):
        raise CheckpointError("unsupported VAE: the number of ResBlocks differs between levels")
    return {
        "double_z": True,
        "z_channels": int(z),
        "in_channels": int(in_ch),
        "out_ch": int(out_ch),
        "ch": int(ch),
        "ch_mult": mult,
        "num_res_blocks": nrb,
        "attn_resolutions": [],
    }


def _heads(family: str, chans: list[int]) -> int | list[int]:
    """SD 1.x uses 8 heads at every level; SD 2.x uses 64-channel heads (as ComfyUI and diffusers do)."""
    if family == "sd1":
        bad = [c for c in chans if c % 8]
        if bad:
            raise CheckpointError(f"unsupported UNet: widths {bad} do not split into SD 1.x's 8 attention heads")
        return 8
    bad = [c for c in chans if c % 64]
    if bad:
        raise CheckpointError(f"unsupported UNet: widths {bad} do not split into SD 2.x's 64-channel attention heads")
    return [c // 64 for c in chans]


def unet_from_ldm(sd: Mapping[str, torch.Tensor], family: str, ddconfig: dict[str, Any]) -> UNet2DConditionModel:
    """Build the diffusers UNet for ``sd``'s ``model.diffusion_model.*`` tensors (assigned, not copied).

    One layout diffusers' config cannot express is handled by module surgery: a mid-block whose
    transformer depth differs from the last level's (ComfyUI's tiny test UNets use depth 0 there).
    The UNet's ``config`` then does not describe its mid-block, so copy it with ``copy.deepcopy``,
    never ``from_config``.
    """
    unet_sd = {UNET + k: v for k, v in _sub(sd, UNET).items()}
    lay = _unet_layout(_sub(sd, UNET))
    n = len(lay["channel_mult"])
    chans = [lay["model_channels"] * m for m in lay["channel_mult"]]
    attn_down = [d is not None for d in lay["down_depth"]]
    unet_params: dict[str, Any] = {
        "in_channels": lay["in_channels"],
        "out_channels": lay["out_channels"],
        "model_channels": lay["model_channels"],
        "channel_mult": lay["channel_mult"],
        "num_res_blocks": lay["num_res_blocks"],
        "attention_resolutions": [2**i for i in range(n) if attn_down[i]],
        "transformer_depth": [d if d is not None else 1 for d in lay["down_depth"]],
        "context_dim": lay["context_dim"],
        "use_linear_in_transformer": lay["linear"],
        **({"num_heads": 8} if family == "sd1" else {"num_head_channels": 64}),
    }
    original_config = {
        "model": {
            "params": {
                "scale_factor": SD_VAE_SCALE,
                "unet_config": {"params": unet_params},
                "first_stage_config": {"params": {"ddconfig": ddconfig}},
            }
        }
    }
    heads = _heads(family, chans)
    config = sfu.create_unet_diffusers_config_from_ldm(original_config, unet_sd)
    config["attention_head_dim"] = heads
    up_depth = lay["up_depth"]
    config["up_block_types"] = ["CrossAttnUpBlock2D" if d is not None else "UpBlock2D" for d in up_depth]
    tl = list(unet_params["transformer_depth"])
    mid_surgery = False
    if lay["mid"] == "UNetMidBlock2DCrossAttn":
        if not attn_down[-1]:
            tl[-1] = lay["mid_depth"]  # DownBlock2D ignores it; the mid-block reads the last entry
        elif tl[-1] != lay["mid_depth"]:
            mid_surgery = True
    config["transformer_layers_per_block"] = tl
    rev = [d if d is not None else t for d, t in zip(up_depth, reversed(tl), strict=True)]
    if rev != list(reversed(tl)):
        config["reverse_transformer_layers_per_block"] = rev
    config["mid_block_type"] = lay["mid"]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
        if mid_surgery:
            other = {**config, "transformer_layers_per_block": [lay["mid_depth"]] * n}
            other.pop("reverse_transformer_layers_per_block", None)
            unet.mid_block = UNet2DConditionModel.from_config(other).mid_block
    converted = sfu.convert_ldm_unet_checkpoint(unet_sd, config)
    if len(converted) != len(unet_sd):
        raise CheckpointError(
            f"unsupported UNet layout: {len(unet_sd) - len(converted)} of {len(unet_sd)} UNet tensors have no "
            "diffusers equivalent"
        )
    assign_state_dict(unet, converted, "UNet")
    return unet


def vae_from_ldm(sd: Mapping[str, torch.Tensor], ddconfig: dict[str, Any]) -> AutoencoderKL:
    """Build the diffusers ``AutoencoderKL`` for ``sd``'s ``first_stage_model.*`` tensors."""
    vae_sd = {VAE + k: v for k, v in _sub(sd, VAE).items() if not k.startswith("loss.")}
    original_config = {
        "model": {"params": {"scale_factor": SD_VAE_SCALE, "first_stage_config": {"params": {"ddconfig": ddconfig}}}}
    }
    config = sfu.create_vae_diffusers_config_from_ldm(original_config, {})
    config["mid_block_add_attention"] = f"{VAE}encoder.mid.attn_1.q.weight" in vae_sd
    config["use_quant_conv"] = f"{VAE}quant_conv.weight" in vae_sd
    config["use_post_quant_conv"] = f"{VAE}post_quant_conv.weight" in vae_sd
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(config)
    converted = sfu.convert_ldm_vae_checkpoint(vae_sd, config)
    if len(converted) != len(vae_sd):
        raise CheckpointError(
            f"unsupported VAE layout: {len(vae_sd) - len(converted)} of {len(vae_sd)} VAE tensors have no "
            "diffusers equivalent"
        )
    assign_state_dict(vae, converted, "VAE")
    return vae


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers draws a "Loading weights" bar per model; a library loading three models should not."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def assign_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Load ``sd`` into a meta-device ``model`` by assignment (no random init, no extra copy)."""
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(
            f"the {what} weights do not match the architecture inferred from them: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def _text_config(family: str, te: Mapping[str, torch.Tensor]) -> CLIPTextConfig:
    """The shipped CLIP config for ``family``, with sizes taken from the weights so smaller encoders load."""
    name = "clip_l_text_config.json" if family == "sd1" else "open_clip_h_text_config.json"
    base = json.loads((ASSETS / name).read_text())
    vocab, hidden = te["embeddings.token_embedding.weight"].shape
    if hidden != base["hidden_size"]:
        if hidden % 64:
            raise CheckpointError(f"unsupported text encoder width {hidden}: CLIP heads are 64 channels wide")
        base["num_attention_heads"] = hidden // 64
    base.update(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        max_position_embeddings=int(te["embeddings.position_embedding.weight"].shape[0]),
        num_hidden_layers=len(_indices(te, "encoder.layers.")),
        intermediate_size=int(te["encoder.layers.0.mlp.fc1.weight"].shape[0]),
    )
    return CLIPTextConfig(**base)


def text_encoder_state_dict(sd: Mapping[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """The text encoder's tensors in (flattened) Hugging Face ``CLIPTextModel`` keys."""
    if family == "sd1":
        te = {k.removeprefix("text_model."): v for k, v in _sub(sd, CLIP_L).items()}
    else:
        sub = {k: v for k, v in sd.items() if k.startswith(OPEN_CLIP)}
        blocks = _indices(sub, OPEN_CLIP + "transformer.resblocks.")
        last = f"{OPEN_CLIP}transformer.resblocks.{blocks[-1]}."  # SD 2 conditions on the penultimate layer
        sub = {k: v for k, v in sub.items() if not k.startswith(last)}
        hidden = sub[OPEN_CLIP + "token_embedding.weight"].shape[1]
        stub = nn.Module()
        # read only when text_projection is absent (older diffusers read projection_dim, newer hidden_size)
        stub.config = CLIPTextConfig(hidden_size=int(hidden), projection_dim=int(hidden))
        te = {
            k.removeprefix("text_model."): v for k, v in sfu.convert_open_clip_checkpoint(stub, sub, OPEN_CLIP).items()
        }
    drop = ("text_projection.weight", "text_projection", "logit_scale", "embeddings.position_ids")
    return {k: v for k, v in te.items() if k not in drop}


def text_encoder_from_ldm(sd: Mapping[str, torch.Tensor], family: str, dtype: torch.dtype) -> CLIPTextModel:
    """Build the ``CLIPTextModel`` (SD 2: 23 of OpenCLIP-H's 24 layers) from the checkpoint's text encoder."""
    te = text_encoder_state_dict(sd, family)
    try:
        config = _text_config(family, te)
    except KeyError as e:
        raise CheckpointError(f"unsupported text encoder layout: expected tensor {e.args[0]}") from e
    with torch.device("meta"):
        expected = set(CLIPTextModel(config).state_dict())
    # transformers < 5.6 nests the model under ``text_model``; newer releases flatten it
    prefix = "text_model." if all(k.startswith("text_model.") for k in expected) else ""
    te = {prefix + k: v.to(dtype) for k, v in te.items()}
    missing, unexpected = sorted(expected - set(te)), sorted(set(te) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"the text encoder weights do not match a CLIP text model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    with no_progress_bars():
        return CLIPTextModel.from_pretrained(None, config=config, state_dict=te).to(dtype)
