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


def load_randomly_tuned(ckpt: str) -> tuple:
    """One checkpoint as a stock ComfyUI ``MODEL`` and as a tav pipeline, inflated with random "tuned"
    weights (temporal layers with a non-zero output, perturbed ``to_q``s) so every piece matters.

    Returns ``(model, pipe, video, generator)``; the generator continues the seeded stream for the caller's
    inputs. Call after :func:`boot_pack`."""
    import comfy.sd
    import torch

    from tav import checkpoints, inflation

    torch.manual_seed(0)
    model, _clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=False, output_clip=False)
    pipe = checkpoints.load_pipeline(ckpt, device="cpu", dtype=torch.float32)
    video = inflation.inflate(pipe, norm="video", seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in video.unet.unet.named_parameters():
            if "attn_temp" in name or "norm_temp" in name or name.endswith(("attn1.to_q.weight", "attn2.to_q.weight")):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model, pipe, video, g


def retagged(path: str, **options: str) -> str:
    """A copy of a tuned-weights file as if tuned with other ``inflate()`` options (same tensors, other
    metadata), so one set of random weights serves every key set and GroupNorm choice."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    out = path.replace(".safetensors", "_" + "_".join(options.values()) + ".safetensors")
    save_file(tensors, out, metadata={**meta, **options})
    return out
