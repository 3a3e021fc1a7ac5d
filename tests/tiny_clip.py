"""A tiny random transformers CLIPModel saved as a folder (safetensors + the bundled tokenizer), for CPU tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

ASSETS = Path(__file__).resolve().parents[1] / "tav" / "assets"
#: small enough for CPU tests, the real vocabulary so the real tokenizer works
TEXT = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 77}  # fmt: skip
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}  # fmt: skip


def tiny_clip_model(seed: int = 0, projection_dim: int = 16) -> CLIPModel:
    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=projection_dim)
    return CLIPModel(cfg).eval()


def save_clip_folder(model: CLIPModel, out: Path, tokenizer: bool = True) -> Path:
    """``model`` as a CLIPModel folder (config.json + model.safetensors), with the bundled tokenizer files."""
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer:
        for f in (ASSETS / "clip_tokenizer").iterdir():
            shutil.copy(f, out / f.name)
    return out


def make_tiny_clip(out: Path, seed: int = 0) -> Path:
    return save_clip_folder(tiny_clip_model(seed), out)
