"""Offline checkpoint loading: diffusers folders, LDM single files (SD 1.x / 2.x), Tune-A-Video folders.

The single-file tests write tiny random models in the original LDM key layout with a small
diffusers -> LDM exporter below (the inverse of the mapping the loader uses, written independently
from diffusers' tables), then check the loader gives back exactly the same models.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tav.checkpoints import (
    CheckpointError,
    is_tav_checkpoint,
    load_pipeline,
    load_reference_pipeline,
    load_unet_state_dict,
    pipeline_from_ldm_state_dict,
)
from tav.inflation import load_reference_unet
from tav.weights import fingerprint

ASSETS = Path(__file__).resolve().parents[1] / "tav" / "assets"
TEXT_WIDTH = 64


# -- tiny random models ------------------------------------------------------------------------


def tiny_unet(family: str) -> UNet2DConditionModel:
    """SD1: 8 heads, conv proj_in. SD2: 64-channel heads, linear proj_in. GroupNorm(32) as LDM."""
    torch.manual_seed(1)
    sd2 = family == "sd2"
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(64, 128) if sd2 else (32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=(1, 2) if sd2 else 8,
        use_linear_projection=sd2,
    ).eval()


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(2)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
    ).eval()


def tiny_text_encoder(family: str, width: int = TEXT_WIDTH, layers: int = 2) -> CLIPTextModel:
    torch.manual_seed(3)  # (under a meta device context this only builds the shapes)
    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        max_position_embeddings=77,
        hidden_act="gelu" if family == "sd2" else "quick_gelu",
    )
    return CLIPTextModel(cfg).eval()


# -- diffusers -> LDM export (test-side inverse of the loader's conversion) -----------------------

_UNET_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]


def _rename(sd: dict, pairs: list[tuple[str, str]], parts: dict[str, list[tuple[str, str]]]) -> dict:
    out = {}
    for k, v in sd.items():
        src, dst = next((s, d) for s, d in pairs if k.startswith(s))
        rest = k[len(src) :]
        for kind, sub in parts.items():
            if kind in src:
                for a, b in sub:
                    if rest.startswith(a + "."):
                        rest = b + rest[len(a) :]
        out[dst + rest] = v
    return out


def unet_to_ldm(unet: UNet2DConditionModel) -> dict:
    nrb, n = unet.config.layers_per_block, len(unet.config.block_out_channels)
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(n):
        for j in range(nrb):
            pairs += [
                (f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(nrb + 1) * i + j + 1}.0."),
                (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(nrb + 1) * i + j + 1}.1."),
            ]
        pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(nrb + 1) * (i + 1)}.0.op."))
        for j in range(nrb + 1):
            pairs += [
                (f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(nrb + 1) * i + j}.0."),
                (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(nrb + 1) * i + j}.1."),
            ]
        has_attn = hasattr(unet.up_blocks[i], "attentions")
        pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{(nrb + 1) * i + nrb}.{2 if has_attn else 1}."))
    sd = _rename(unet.state_dict(), pairs, {".resnets.": _UNET_RESNET})
    return {"model.diffusion_model." + k: v for k, v in sd.items()}


def vae_to_ldm(vae: AutoencoderKL) -> dict:
    nrb, n = vae.config.layers_per_block, len(vae.config.block_out_channels)
    pairs = [
        (f"{p}.{a}.", f"{p}.{b}.")
        for p in ("encoder", "decoder")
        for a, b in [
            ("conv_in", "conv_in"),
            ("conv_out", "conv_out"),
            ("conv_norm_out", "norm_out"),
            ("mid_block.resnets.0", "mid.block_1"),
            ("mid_block.resnets.1", "mid.block_2"),
            ("mid_block.attentions.0", "mid.attn_1"),
        ]
    ]
    pairs += [("quant_conv.", "quant_conv."), ("post_quant_conv.", "post_quant_conv.")]
    for i in range(n):
        pairs += [(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.") for j in range(nrb)]
        pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        pairs += [(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{n - 1 - i}.block.{j}.") for j in range(nrb + 1)]
        pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample."))
    attn = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]
    sd = _rename(vae.state_dict(), pairs, {"resnets": [("conv_shortcut", "nin_shortcut")], "attentions": attn})
    # LDM's VAE attention uses 1x1 convolutions
    sd = {k: v[:, :, None, None] if ".attn_1." in k and v.ndim == 2 else v for k, v in sd.items()}
    return {"first_stage_model." + k: v for k, v in sd.items()}


def clip_to_ldm(te: CLIPTextModel) -> dict:
    return {"cond_stage_model.transformer.text_model." + k: v for k, v in te.state_dict().items()}


def open_clip_to_ldm(te: CLIPTextModel) -> dict:
    """OpenCLIP layout plus one extra final block, which SD 2 (penultimate layer) never uses."""
    sd, out, p = te.state_dict(), {}, "cond_stage_model.model."
    out[p + "token_embedding.weight"] = sd["embeddings.token_embedding.weight"]
    out[p + "positional_embedding"] = sd["embeddings.position_embedding.weight"]
    out[p + "ln_final.weight"], out[p + "ln_final.bias"] = sd["final_layer_norm.weight"], sd["final_layer_norm.bias"]
    n = te.config.num_hidden_layers
    for i in range(n + 1):
        src = sd if i < n else tiny_text_encoder("sd2", te.config.hidden_size, n + 1).state_dict()
        a, b = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{b}attn.in_proj_{kind}"] = torch.cat([src[f"{a}self_attn.{x}_proj.{kind}"] for x in "qkv"])
            for x, y in [
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ]:
                out[f"{b}{y}.{kind}"] = src[f"{a}{x}.{kind}"]
    out[p + "text_projection"] = torch.randn(te.config.hidden_size, te.config.hidden_size)
    out[p + "logit_scale"] = torch.tensor(4.6)
    return out


def to_ldm(family: str, unet: nn.Module, vae: nn.Module, te: nn.Module) -> dict:
    text = clip_to_ldm(te) if family == "sd1" else open_clip_to_ldm(te)
    return {**unet_to_ldm(unet), **vae_to_ldm(vae), **text}


def random_like(shapes: dict, seed: int = 0) -> dict:
    """fp16 noise for meta-device shapes, cut from one 1M-value pool (drawing 150M fresh values is slow)."""
    pool = (torch.randn(1 << 20, generator=torch.Generator().manual_seed(seed)) * 0.02).half()
    out = {}
    for i, (k, v) in enumerate(shapes.items()):
        n = v.numel()
        flat = (
            pool.repeat(n // pool.numel() + 1)[:n]
            if n > pool.numel() // 2
            else pool[(i * 7919) % (pool.numel() // 2) :][:n]
        )
        out[k] = flat.reshape(v.shape).clone()
    return out


# -- checks ------------------------------------------------------------------------------------


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@torch.no_grad()
def assert_same_outputs(pipe, unet: nn.Module, vae: nn.Module, te: nn.Module) -> None:
    torch.manual_seed(0)
    x, ehs, ids = torch.randn(1, 4, 8, 8), torch.randn(1, 7, TEXT_WIDTH), torch.randint(0, 49408, (1, 9))
    assert torch.equal(pipe.unet(x, 10, ehs).sample, unet(x, 10, ehs).sample)
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(pipe.vae.encode(img).latent_dist.mean, vae.encode(img).latent_dist.mean)
    assert torch.equal(pipe.vae.decode(x).sample, vae.decode(x).sample)
    assert torch.equal(pipe.text_encoder(ids)[0], te(ids)[0])


@pytest.fixture(scope="module")
def sd1():
    return tiny_unet("sd1"), tiny_vae(), tiny_text_encoder("sd1")


def write_diffusers_folder(root: Path, unet: nn.Module, vae: nn.Module, te: nn.Module) -> Path:
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae", safe_serialization=False)  # legacy .bin path (weights_only load)
    te.save_pretrained(root / "text_encoder")
    CLIPTokenizer.from_pretrained(str(ASSETS / "clip_tokenizer")).save_pretrained(str(root / "tokenizer"))
    (root / "scheduler").mkdir()
    sched = {
        "_class_name": "PNDMScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "skip_prk_steps": True,
        "steps_offset": 1,
    }
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


# -- tests -------------------------------------------------------------------------------------


def test_diffusers_folder_round_trip(tmp_path, sd1):
    unet, vae, te = sd1
    folder = write_diffusers_folder(tmp_path / "sd", unet, vae, te)
    assert (folder / "vae" / "diffusion_pytorch_model.bin").is_file()
    pipe = load_pipeline(folder)
    for a, b in zip((pipe.unet, pipe.vae, pipe.text_encoder), sd1, strict=True):
        assert_same_weights(a, b)
    assert_same_outputs(pipe, *sd1)
    assert pipe.base_fingerprint == fingerprint(unet)
    assert pipe.scheduler_config["prediction_type"] == "epsilon"
    assert pipe.scheduler_config["beta_schedule"] == "scaled_linear" and "_class_name" not in pipe.scheduler_config
    assert pipe.encode_prompt("a cat").shape == (1, 77, TEXT_WIDTH)
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    assert not is_tav_checkpoint(folder)
    half = load_pipeline(folder, dtype=torch.float16, prediction_type="v_prediction")
    assert half.dtype == torch.float16 and half.prediction_type == "v_prediction"
    assert half.base_fingerprint == pipe.base_fingerprint


def test_single_file_sd1_matches_diffusers(tmp_path, sd1):
    ldm = to_ldm("sd1", *sd1)
    save_file({k: v.contiguous() for k, v in ldm.items()}, tmp_path / "tiny.safetensors")
    pipe = load_pipeline(tmp_path / "tiny.safetensors")
    for a, b in zip((pipe.unet, pipe.vae, pipe.text_encoder), sd1, strict=True):
        assert_same_weights(a, b)
    assert_same_outputs(pipe, *sd1)
    assert pipe.prediction_type == "epsilon" and pipe.tokenizer.pad_token == "<|endoftext|>"
    assert pipe.base_fingerprint == fingerprint(sd1[0])
    assert pipe.source.endswith("tiny.safetensors")
    # a legacy pickle of plain tensors (Lightning layout) loads through weights_only
    torch.save({"state_dict": ldm, "global_step": 7}, tmp_path / "tiny.ckpt")
    assert_same_weights(load_pipeline(tmp_path / "tiny.ckpt").unet, sd1[0])


def test_single_file_sd2_openclip(tmp_path):
    models = tiny_unet("sd2"), tiny_vae(), tiny_text_encoder("sd2")
    save_file({k: v.contiguous() for k, v in to_ldm("sd2", *models).items()}, tmp_path / "sd2.safetensors")
    pipe = load_pipeline(tmp_path / "sd2.safetensors")
    assert pipe.text_encoder.config.num_hidden_layers == 2  # the extra (last) OpenCLIP block is dropped
    assert pipe.text_encoder.config.hidden_act == "gelu"
    for a, b in zip((pipe.unet, pipe.vae, pipe.text_encoder), models, strict=True):
        assert_same_weights(a, b)
    assert_same_outputs(pipe, *models)
    assert pipe.prediction_type == "v_prediction"
    assert pipe.tokenizer.pad_token == "!" and pipe.tokenizer("a", padding="max_length").input_ids[-1] == 0
    assert load_pipeline(tmp_path / "sd2.safetensors", prediction_type="epsilon").prediction_type == "epsilon"


def test_comfy_state_dict_bridge(sd1):
    ldm = to_ldm("sd1", *sd1)
    # what ComfyUI's state_dict_for_saving adds around the weights
    comfy = {
        **ldm,
        "v_pred": torch.tensor([]),
        "_quantization_metadata": {"format_version": "1.0"},
        "cond_stage_model.transformer.text_projection.weight": torch.eye(TEXT_WIDTH),
        "cond_stage_model.logit_scale": torch.tensor(4.6),
    }
    with torch.inference_mode():  # ComfyUI runs every node under inference mode
        pipe = pipeline_from_ldm_state_dict(comfy, source="comfy")
    assert pipe.prediction_type == "v_prediction" and pipe.source == "comfy"
    assert_same_weights(pipe.unet, sd1[0])
    assert "v_pred" in comfy  # the caller's dict is left as it was
    # the pipeline owns its tensors: ComfyUI patching its weights in place must not leak in
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    before = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight.clone()
    ldm[key].add_(1.0)
    try:
        assert torch.equal(pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight, before)
    finally:
        ldm[key].sub_(1.0)


def test_sd15_shaped_checkpoint(tmp_path):
    """Real SD1.5 key layout and widths (320 ch, context 768, CLIP-L width), reduced depth like the
    ComfyUI host's make_tiny_sd15.py: one level, one ResBlock, a depth-0 mid-block transformer."""
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            block_out_channels=(320,),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",),
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        unet.mid_block.attentions[0].transformer_blocks = nn.ModuleList()
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
        )
        te = tiny_text_encoder("sd1", width=768, layers=1)
    ldm = random_like({**unet_to_ldm(unet), **vae_to_ldm(vae), **clip_to_ldm(te)})
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in ldm
    assert not any(k.startswith("model.diffusion_model.middle_block.1.transformer_blocks") for k in ldm)
    save_file(ldm, tmp_path / "sd15_tiny.safetensors")
    pipe = load_pipeline(tmp_path / "sd15_tiny.safetensors")
    assert pipe.unet.config.cross_attention_dim == 768 and pipe.unet.config.block_out_channels == [320]
    assert len(pipe.unet.mid_block.attentions[0].transformer_blocks) == 0
    assert pipe.text_encoder.config.num_attention_heads == 12  # CLIP-L's, from the shipped config
    assert pipe.latent_factor == 8
    with torch.no_grad():
        out = pipe.unet(torch.randn(1, 4, 8, 8), 500, pipe.encode_prompt("a man is skiing")).sample
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    assert time.time() - t0 < 30


def test_tune_a_video_folder(tmp_path, sd1):
    unet, vae, te = sd1
    folder = write_diffusers_folder(tmp_path / "tav", unet, vae, te)
    # rewrite the UNet as the official implementation saves it: 3-D class and block names, temporal layers
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    cfg.update(
        _class_name="UNet3DConditionModel",
        mid_block_type="UNetMidBlock3DCrossAttn",
        down_block_types=[b.replace("2D", "3D") for b in cfg["down_block_types"]],
        up_block_types=[b.replace("2D", "3D") for b in cfg["up_block_types"]],
    )
    (folder / "unet" / "config.json").write_text(json.dumps(cfg))
    sd = dict(unet.state_dict())
    for k in [k for k in sd if k.endswith("attn1.to_q.weight")]:
        base, dim = k[: -len("attn1.to_q.weight")], sd[k].shape[0]
        for name in ("to_q", "to_k", "to_v"):
            sd[f"{base}attn_temp.{name}.weight"] = torch.randn(dim, dim)
        sd[f"{base}attn_temp.to_out.0.weight"], sd[f"{base}attn_temp.to_out.0.bias"] = (
            torch.zeros(dim, dim),
            torch.randn(dim),
        )
        sd[f"{base}norm_temp.weight"], sd[f"{base}norm_temp.bias"] = torch.ones(dim), torch.zeros(dim)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(sd, folder / "unet" / "diffusion_pytorch_model.bin")  # the official format: a .bin
    assert is_tav_checkpoint(folder) and is_tav_checkpoint(folder / "unet")
    full = load_unet_state_dict(folder)
    assert full.keys() == sd.keys()
    pipe = load_pipeline(folder)
    assert_same_weights(pipe.unet, unet)
    assert pipe.base_fingerprint == fingerprint(unet)
    # the temporal half goes through tav.inflation
    video = load_reference_unet(pipe, full)
    temporal = [k for k in sd if "attn_temp" in k or "norm_temp" in k]
    assert temporal and all(torch.equal(video.unet.unet.state_dict()[k], sd[k]) for k in temporal)
    ref = load_reference_pipeline(folder)  # the one-call form the CLI uses
    x, emb = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        torch.testing.assert_close(ref.unet(x, 5, emb), video.unet(x, 5, emb))
    # only the UNet: a clear pointer to the two-step load
    (folder / "model_index.json").unlink()
    with pytest.raises(CheckpointError, match="load_reference_unet"):
        load_pipeline(folder)


class _NotATensor:
    """Stands in for the Lightning callback objects old .ckpt files pickle."""


def test_errors(tmp_path, sd1):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pipeline(tmp_path / "missing.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="model_index.json"):
        load_pipeline(tmp_path / "empty")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "callbacks": _NotATensor()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=r"weights_only=True\), which rejected it \(it holds \S+_NotATensor\)"):
        load_pipeline(tmp_path / "evil.ckpt")
    sdxl = {
        "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3, 1),
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1, 4, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": torch.zeros(1, 1),
    }
    save_file(sdxl, tmp_path / "sdxl.safetensors")
    with pytest.raises(CheckpointError, match=r"only Stable Diffusion 1\.x/2\.x .*SDXL.*conditioner\.embedders"):
        load_pipeline(tmp_path / "sdxl.safetensors")
    save_file({"lora_unet_down.lora_up.weight": torch.zeros(1)}, tmp_path / "lora.safetensors")
    with pytest.raises(
        CheckpointError, match="only Stable Diffusion 1.x/2.x checkpoints are supported; this is not a full"
    ):
        load_pipeline(tmp_path / "lora.safetensors")
    unet_only = unet_to_ldm(sd1[0])
    with pytest.raises(CheckpointError, match="no VAE"):
        pipeline_from_ldm_state_dict(unet_only)
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported checkpoint file type"):
        load_pipeline(tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="prediction_type"):
        load_pipeline(tmp_path / "model.onnx", prediction_type="v")
    wrong_text = {**unet_to_ldm(sd1[0]), **vae_to_ldm(sd1[1]), **clip_to_ldm(tiny_text_encoder("sd1", width=128))}
    with pytest.raises(CheckpointError, match="mixes parts"):
        pipeline_from_ldm_state_dict(wrong_text)
