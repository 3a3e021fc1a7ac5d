"""The native path: a tuned model as a stock MODEL, inverted noise as a stock LATENT, the reference SIGMAS.

Everything goes through ComfyUI's public patch API on a ``ModelPatcher`` clone, so stock samplers,
LoRA loaders, ControlNet nodes and model management apply (docs/nodes.md, "The native path"):

- sparse-causal ``attn1``: ``set_model_attn1_replace`` per transformer block;
- temporal attention after the feed-forward: ``add_object_patch`` of each transformer block by
  a copy that shares the original's children (so weight patches, LoRAs and lowvram casting still
  resolve by key) and adds ``attn_temp``/``norm_temp``;
- GroupNorm over all frames: object patches of the resnets' norms and ``out.0`` by copies whose
  class subclasses the original ops class (casting/offload keep working) and reshapes to 5-D;
- tuned projections: ``add_patches`` with ``"set"`` (see :func:`apply_tuned`);
- frame count: a ``DIFFUSION_MODEL`` wrapper; frames = batch / number of conds in the batch.

Pure logic (key mapping, schedule, noise convention) is in :mod:`tav.native`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Optional

import torch
from comfy_api.v0_0_2 import io
from torch import nn

from tav import native
from tav.attention import KeysValues
from tav.pipeline import Pipeline

from . import files
from .common import CATEGORY, INVERTED, PIPELINE, TUNED_FOLDER, log

WRAPPER_KEY = "tuneavideo"
FROM_PIPELINE = "(from pipeline)"
PREFIX = "diffusion_model."


@dataclasses.dataclass
class FrameContext:
    """Frames per video in the current forward; set by the wrapper, read by every patched module."""

    frames: int = 1


# --- module copies that share the original's parameters and children ---------------------------

_CLASSES: dict[tuple[str, type], type] = {}


def _subclass(kind: str, base: type, make: Callable[[type], type]) -> type:
    key = (kind, base)
    if key not in _CLASSES:
        _CLASSES[key] = make(base)
    return _CLASSES[key]


def _share_copy(module: nn.Module, cls: type) -> nn.Module:
    """A new module of ``cls`` (a subclass of ``type(module)``) sharing parameters, buffers and children.

    Only the containers are new, so adding children or ComfyUI's per-module lowvram state never
    touches the original, which stays exactly as it was (the input MODEL is not changed).
    """
    new = object.__new__(cls)
    for name, value in module.__dict__.items():
        # own containers (parameters, buffers, children, hooks, ComfyUI's weight_function lists)
        new.__dict__[name] = copy.copy(value) if isinstance(value, (dict, list)) else value
    for name in ("weight_function", "bias_function"):
        if name in new.__dict__:
            new.__dict__[name] = []
    return new


def _video_norm_class(base: type) -> type:
    class VideoGroupNorm(base):  # type: ignore[valid-type, misc]
        """GroupNorm pooling statistics over all frames of a video (the reference's 5-D norm)."""

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            f = self.tav_ctx.frames
            if f <= 1 or x.ndim != 4 or x.shape[0] % f:
                return super().forward(x, *args, **kwargs)
            bf, c, h, w = x.shape
            x5 = x.reshape(bf // f, f, c, h, w).transpose(1, 2)
            y = super().forward(x5, *args, **kwargs)
            return y.transpose(1, 2).reshape(bf, c, h, w)

    VideoGroupNorm.__name__ = f"Video{base.__name__}"
    return VideoGroupNorm


def _video_block_class(base: type) -> type:
    class VideoTransformerBlock(base):  # type: ignore[valid-type, misc]
        """The stock block, then ``x + attn_temp(norm_temp(x))`` across frames (the reference's T-Attn)."""

        def forward(self, x: torch.Tensor, context: Any = None, transformer_options: Optional[dict] = None) -> Any:
            x = super().forward(x, context=context, transformer_options=transformer_options or {})
            f = self.tav_ctx.frames
            bf, n, d = x.shape
            b = bf // f
            h = self.norm_temp(x).reshape(b, f, n, d).transpose(1, 2).reshape(b * n, f, d)
            h = self.attn_temp(h).reshape(b, n, f, d).transpose(1, 2).reshape(bf, n, d)
            return x + h

    VideoTransformerBlock.__name__ = f"Video{base.__name__}"
    return VideoTransformerBlock


class TemporalAttention(nn.Module):
    """Self-attention across frames, keyed like the reference's ``attn_temp`` (``to_out.0``).

    Built from the model's own ops classes so ComfyUI's casting and lowvram paths apply to it.
    """

    def __init__(
        self, linear: type, dim: int, heads: int, qkv_bias: bool, device: Any, dtype: Any, precision: Any
    ) -> None:
        super().__init__()
        self.heads, self.attn_precision = heads, precision
        kw = {"device": device, "dtype": dtype}
        self.to_q = linear(dim, dim, bias=qkv_bias, **kw)
        self.to_k = linear(dim, dim, bias=qkv_bias, **kw)
        self.to_v = linear(dim, dim, bias=qkv_bias, **kw)
        self.to_out = nn.Sequential(linear(dim, dim, bias=True, **kw), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from comfy.ldm.modules import attention

        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        out = attention.optimized_attention(q, k, v, self.heads, attn_precision=self.attn_precision)
        return self.to_out(out)


def _temporal_block(block: nn.Module, tensors: dict[str, torch.Tensor], ctx: FrameContext, device: Any) -> nn.Module:
    """A copy of ``block`` with the temporal layers, created on ``device`` (the offload device: ComfyUI
    moves them with the rest of the model when it loads the patched clone)."""
    param = block.attn1.to_q.weight
    dim = param.shape[1]
    attn = TemporalAttention(
        type(block.attn1.to_q),
        dim,
        block.n_heads,
        "attn_temp.to_q.bias" in tensors,
        device,
        param.dtype,
        getattr(block, "attn_precision", None),
    )
    norm = type(block.norm1)(dim, device=device, dtype=param.dtype)
    new = _share_copy(block, _subclass("block", type(block), _video_block_class))
    new.attn_temp, new.norm_temp = attn, norm  # registered as children of the copy only
    sd = {k: v.to(device, param.dtype) for k, v in tensors.items()}
    missing, unexpected = nn.Module.load_state_dict(nn.ModuleDict({"attn_temp": attn, "norm_temp": norm}), sd, False)
    if missing or unexpected:
        raise ValueError(f"temporal weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    new.tav_ctx = ctx
    return new


def _video_norm(norm: nn.Module, ctx: FrameContext) -> nn.Module:
    new = _share_copy(norm, _subclass("norm", type(norm), _video_norm_class))
    new.tav_ctx = ctx
    return new


@dataclasses.dataclass
class FrameAnchor:
    """The clip's frame 0 as every context window's sparse-causal anchor, for one sampling step.

    Set on each window by :mod:`nodes.context_windows` (``context_window.tav_anchor``): the window
    starting at frame 0 runs first and ``record``s frame 0's keys/values per attn1 and per cond
    (ComfyUI may run a window's cond and uncond in one batch or in two), later windows attend to them.
    """

    kv: dict[tuple, tuple[torch.Tensor, torch.Tensor]]
    record: bool

    def keys_values(self, k: torch.Tensor, v: torch.Tensor, frames: int, mode: str, extra_options: dict) -> KeysValues:
        from tav.attention import first_frame, key_frames_of_clip, key_frames_of_window

        block = (*extra_options["block"], extra_options.get("block_index", 0))
        uuids = extra_options["uuids"]
        if self.record:
            k0, v0 = first_frame(k, frames), first_frame(v, frames)
            for j, uuid in enumerate(uuids):
                self.kv[(block, uuid)] = (k0[j : j + 1], v0[j : j + 1])
            return key_frames_of_clip(k, v, frames, mode)
        if any((block, u) not in self.kv for u in uuids):
            raise RuntimeError("context windows: the window holding frame 0 must run first in every step")
        k0 = torch.cat([self.kv[(block, u)][0] for u in uuids])
        v0 = torch.cat([self.kv[(block, u)][1] for u in uuids])
        return key_frames_of_window(k, v, (k0, v0), frames, mode)


def _sparse_causal(ctx: FrameContext, mode: str) -> Callable:
    """An attn1 replacement: the query of frame i over the keys/values of its key frames (``mode``, see
    :data:`tav.attention.KEY_FRAMES`; in a context window with the frame-0 anchor, frame 0 is the clip's,
    see :class:`FrameAnchor`). Key frames listed twice get the processor's bias, as an attention mask."""
    from tav.attention import key_frames_of_clip

    def attn1(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        from comfy.ldm.modules import attention

        f = ctx.frames
        anchor = getattr(extra_options.get("context_window"), "tav_anchor", None)
        bias = None
        if anchor is not None:
            k, v, bias = anchor.keys_values(k, v, f, mode, extra_options)
        elif f > 1:
            k, v, bias = key_frames_of_clip(k, v, f, mode)
        return attention.optimized_attention(
            q,
            k,
            v,
            extra_options["n_heads"],
            mask=None if bias is None else bias.to(q.dtype),
            attn_precision=extra_options.get("attn_precision"),
        )

    return attn1


def _frames_wrapper(ctx: FrameContext) -> Callable:
    """DIFFUSION_MODEL wrapper: frames per video = batch / conds in it (ComfyUI never splits a cond)."""

    def wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
        x = args[0]
        opts = args[5] if len(args) > 5 else kwargs.get("transformer_options", {})
        conds = len(opts.get("cond_or_uncond") or [None])
        if x.shape[0] % conds:
            raise ValueError(f"batch of {x.shape[0]} latents is not a whole number of videos for {conds} conds")
        prev, ctx.frames = ctx.frames, x.shape[0] // conds
        try:
            return executor(*args, **kwargs)
        finally:
            ctx.frames = prev

    return wrapper


# --- checks -----------------------------------------------------------------------------------


def diffusers_to_comfy(model: Any) -> dict[str, str]:
    import comfy.utils

    return comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)


def patched_weights(patcher: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """A ``ModelPatcher``'s weights under ``prefix`` as it computes with them: base weights with its patches
    (LoRAs) applied; keys without the prefix.

    Built from ``get_key_patches``, which keeps the base weight while a model is loaded patched, with
    nothing loaded: loading with patches forced in (``force_patch_weights``) fails under dynamic VRAM.
    """
    import comfy.lora

    out = {}
    for key, entry in patcher.get_key_patches(prefix).items():
        first = entry[0]
        weight = first[0] if isinstance(first, tuple) else first
        if len(entry) > 1:
            weight = comfy.lora.calculate_weight(entry[1:], weight.to(torch.float32, copy=True), key)
        out[key[len(prefix) :]] = weight
    return out


def patched_unet_weights(model: Any) -> dict[str, torch.Tensor]:
    """The UNet weights as the MODEL computes with them (its LoRAs applied).

    That is what a pipeline bridged from the same MODEL (From ComfyUI Models) was tuned and
    fingerprinted on, so a MODEL carrying the same LoRAs passes the base check.
    """
    return patched_weights(model, PREFIX)


def _prediction(model: Any) -> str:
    import comfy.model_base

    t = model.model.model_type
    if t == comfy.model_base.ModelType.EPS:
        return "epsilon"
    if t == comfy.model_base.ModelType.V_PREDICTION:
        return "v_prediction"
    return str(getattr(t, "name", t))


def has_tuned(model: Any) -> bool:
    """Whether this MODEL already carries the patch (its wrapper key)."""
    return any(WRAPPER_KEY in by_key for by_key in getattr(model, "wrappers", {}).values())


def check_base(model: Any, tuned: native.TunedWeights, d2c: dict[str, str]) -> None:
    if not tuned.fingerprint:
        raise ValueError("the tuned weights name no base model (no fingerprint); disable check_base_model to use them")
    mine = native.comfy_fingerprint(patched_unet_weights(model), d2c)
    if mine != tuned.fingerprint:
        kind = type(model.model.model_config).__name__
        raise ValueError(
            f"these tuned weights were made for base model {tuned.fingerprint} "
            f"({tuned.source or 'unknown source'}), but this MODEL ({kind}, with its LoRAs or other patches) "
            f"is {mine}. Connect the checkpoint (with the same LoRAs) the clip was tuned on."
        )


# --- the patch --------------------------------------------------------------------------------


def apply_tuned(
    model: Any, tuned: native.TunedWeights, *, check_base_model: bool = True, leave_out: Iterable[str] = ()
) -> Any:
    """A patched clone of ``model`` that computes the tuned video UNet; ``model`` is not changed.

    Tuned projections are ``"set"`` patches: the clip was tuned on the MODEL's weights with its
    LoRAs applied (the fingerprint checks that), so the tuned tensor *is* the final weight and
    replaces whatever earlier patches made of that key; LoRAs loaded after this node stack on it.
    ``leave_out`` drops pieces (:data:`tav.native.PIECES`): only for negative-control tests.
    """
    leave = set(leave_out)
    unknown = leave - set(native.PIECES)
    if unknown:
        raise ValueError(f"unknown pieces {sorted(unknown)}; known: {native.PIECES}")
    if has_tuned(model):
        raise ValueError("this MODEL already has Tune-A-Video applied; connect the stock MODEL from the loader")
    pred = _prediction(model)
    if pred != tuned.prediction_type:
        raise ValueError(f"the tuned weights are for a {tuned.prediction_type} model, this MODEL is {pred}")
    d2c = diffusers_to_comfy(model)
    if not d2c:
        raise ValueError(f"{type(model.model.model_config).__name__} is not an SD 1.x/2.x-style UNet model")
    if check_base_model:
        check_base(model, tuned, d2c)

    ctx = FrameContext()
    clone = model.clone()
    temporal = native.comfy_temporal(tuned.temporal, d2c)
    if "temporal" in leave:
        temporal = {}
    for path, tensors in temporal.items():
        block = clone.get_model_object(PREFIX + path)
        clone.add_object_patch(PREFIX + path, _temporal_block(block, tensors, ctx, model.offload_device))
    if tuned.attention != "frame" and "sparse_causal" not in leave:
        replace = clone.model_options["transformer_options"].get("patches_replace", {}).get("attn1", {})
        fn = _sparse_causal(ctx, tuned.attention)
        for path in native.block_map(d2c).values():
            name, number, index = native.attn1_patch_id(path)
            if (name, number, index) in replace:
                log.warning("Tune-A-Video: replacing another node's attn1 patch on %s", path)
            clone.set_model_attn1_replace(fn, name, number, index)
    if tuned.norm == "video" and "video_norm" not in leave:
        for path in native.video_norm_paths(d2c):
            clone.add_object_patch(PREFIX + path, _video_norm(clone.get_model_object(PREFIX + path), ctx))
    if "projections" not in leave:
        patches = {PREFIX + native.comfy_key(k, d2c): ("set", (v,)) for k, v in tuned.projections.items()}
        added = set(clone.add_patches(patches, 1.0, 1.0))
        if added != set(patches):
            raise ValueError(f"tuned projections the MODEL does not have: {sorted(set(patches) - added)[:3]}")
    import comfy.patcher_extension

    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, _frames_wrapper(ctx))
    dtype_bytes = torch.empty((), dtype=model.model_dtype() or torch.float32).element_size()
    clone.size = model.model_size() + native.temporal_param_count(tuned.temporal.values()) * dtype_bytes
    return clone


def model_sigma_table(model: Any) -> torch.Tensor:
    sampling = model.get_model_object("model_sampling")
    if not hasattr(sampling, "sigmas"):
        raise ValueError("this MODEL has no discrete sigma table (not an SD 1.x/2.x-style DDPM model)")
    return sampling.sigmas.detach().float().cpu()


# --- nodes ------------------------------------------------------------------------------------


def _tuned_choices() -> list[str]:
    return [FROM_PIPELINE] + files.model_files(TUNED_FOLDER)


class TAV_ApplyToModel(io.ComfyNode):
    """Patch a stock MODEL with the tuned video layers, for ComfyUI's own samplers."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_ApplyToModel",
            display_name="Tune-A-Video → MODEL",
            category=f"{CATEGORY}/native",
            description="Tune-A-Video as a stock MODEL: sparse-causal attention, temporal attention, GroupNorm over "
            "all frames and the tuned projections, patched onto a clone of the MODEL the clip was tuned on.",
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The stock MODEL the clip was tuned on (Load Checkpoint, with the same LoRAs if tuning "
                    "used them). It is not changed.",
                ),
                io.Combo.Input(
                    "tuned_weights",
                    options=_tuned_choices(),
                    default=FROM_PIPELINE,
                    tooltip=f"{FROM_PIPELINE}: use the connected pipeline (Tune or Load Tuned); or a file saved by "
                    "Save Tuned in models/tuneavideo.",
                ),
                io.Boolean.Input(
                    "check_base_model",
                    default=True,
                    tooltip="Refuse weights tuned on a different base model (recommended).",
                ),
                PIPELINE.Input(
                    "pipeline",
                    optional=True,
                    tooltip=f"The tuned pipeline from Tune or Load Tuned (with tuned_weights = {FROM_PIPELINE}).",
                ),
            ],
            outputs=[
                io.Model.Output(
                    "model_out",
                    display_name="model",
                    tooltip="A patched clone that denoises a whole clip: frames are the LATENT batch. Sample it with "
                    "SamplerCustomAdvanced (+ DDIM Sigmas) or KSampler; LoRA loaders and Apply ControlNet work "
                    "after it.",
                )
            ],
        )

    @classmethod
    def execute(
        cls, model: Any, tuned_weights: str, check_base_model: bool, pipeline: Optional[Pipeline] = None
    ) -> io.NodeOutput:
        if tuned_weights == FROM_PIPELINE:
            if pipeline is None:
                raise ValueError(f"connect a tuned pipeline, or pick a file instead of {FROM_PIPELINE}")
            tuned = native.tuned_from_pipeline(pipeline)
        else:
            if pipeline is not None:
                raise ValueError(
                    f"both a pipeline and the file {tuned_weights!r} are given: pick {FROM_PIPELINE} or disconnect"
                )
            tuned = native.tuned_from_file(files.required_model_file(TUNED_FOLDER, tuned_weights))
        return io.NodeOutput(apply_tuned(model, tuned, check_base_model=check_base_model))


class TAV_InvertedToLatent(io.ComfyNode):
    """Turn DDIM-inverted noise into a stock LATENT in ComfyUI's noise convention."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_InvertedToLatent",
            display_name="Inverted Noise → LATENT (Tune-A-Video)",
            category=f"{CATEGORY}/native",
            description="DDIM-inverted noise (VP convention) -> ComfyUI's x0 + sigma*eps convention at the first DDIM "
            "timestep: times sqrt(1 + sigma^2), divided by the latent scale factor.",
            inputs=[
                INVERTED.Input("inverted", tooltip="From DDIM Invert."),
                io.Model.Input(
                    "model", tooltip="The MODEL that will sample it (gives the sigma table and latent scale)."
                ),
            ],
            outputs=[
                io.Latent.Output(
                    "latent",
                    display_name="latent",
                    tooltip="The inverted clip as a LATENT batch of frames; sample it with noise disabled "
                    "(DisableNoise, or KSamplerAdvanced add_noise=disable) from the first step. Save Latent / Load "
                    "Latent keep it.",
                )
            ],
        )

    @classmethod
    def execute(cls, inverted: dict, model: Any) -> io.NodeOutput:
        steps = int(inverted["steps"])
        sigma = native.first_sigma(model_sigma_table(model), steps, int(inverted.get("steps_offset", 1)))
        scale = float(model.model.latent_format.scale_factor)
        samples = native.vp_to_comfy_latent(inverted["latents"].float().cpu(), sigma, scale)
        return io.NodeOutput({"samples": samples})


class TAV_DDIMSigmas(io.ComfyNode):
    """The reference DDIM schedule as SIGMAS, exactly, for any step count."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_DDIMSigmas",
            display_name="DDIM Sigmas (Tune-A-Video)",
            category=f"{CATEGORY}/native",
            description="The schedule DDIM Invert and Sample use (diffusers DDIM, leading spacing, steps_offset 1, "
            "ending at alpha_bar_0). ComfyUI's ddim_uniform matches it only when 1000 is a multiple of steps, and "
            "ends at 0. The result is the reference's latent times sqrt(1 + sigma_0^2) (~1.0004 for SD).",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL to sample (its sigma table)."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="DDIM steps; match DDIM Invert's steps."),
            ],
            outputs=[
                io.Sigmas.Output(
                    "sigmas",
                    display_name="sigmas",
                    tooltip="steps + 1 sigmas: the reference's timesteps 1 + k * (1000 // steps), then sigma(t=0) "
                    "(at 1000 steps: the 1000 sigmas of t = 999..0). Use with SamplerCustomAdvanced and the ddim "
                    "sampler.",
                )
            ],
        )

    @classmethod
    def execute(cls, model: Any, steps: int) -> io.NodeOutput:
        return io.NodeOutput(native.reference_sigmas(model_sigma_table(model), steps))
