"""Write a random-weight single-file checkpoint that ComfyUI detects as SD 1.x.

Built with ComfyUI's own module classes, so the key layout is exactly what ``CheckpointLoaderSimple``
expects. SD1.x detection pins ``model_channels=320``, ``context_dim=768``, conv ``proj_in`` and no
``label_emb``; depth and level count come from the keys, so the UNet here has one level with one
res-block and one transformer in each of the down, mid and up paths (~30 M parameters). The CLIP-L
text encoder and the KL VAE have fixed architectures in ComfyUI and are full size. Generate it in
CI (a few seconds); never commit it.

Usage: python scripts/make_tiny_sd15.py OUT.safetensors [--comfy-dir DIR] [--fp16] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_COMFY = Path(__file__).resolve().parents[1] / ".venv" / "comfyui"


def _init(module: torch.nn.Module) -> torch.nn.Module:  # noqa: F821
    """Small random init (ComfyUI's ops leave weights uninitialised)."""
    import torch

    for m in module.modules():
        if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            if m.weight is not None:
                torch.nn.init.ones_(m.weight)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                torch.nn.init.zeros_(m.bias)
        else:
            for _, p in m.named_parameters(recurse=False):  # e.g. position embeddings
                torch.nn.init.normal_(p, std=0.02)
    return module


def build_state_dict(comfy_dir: Path, seed: int = 0, controlnet: bool = False) -> dict:
    """The full LDM-layout state dict (``model.diffusion_model.*``, ``first_stage_model.*``,
    ``cond_stage_model.transformer.*``)."""
    sys.path.insert(0, str(comfy_dir))
    import torch
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = True  # must happen before comfy.model_management is imported
    import comfy.clip_model
    import comfy.ops
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(seed)
    ops = comfy.ops.disable_weight_init
    unet_cfg = dict(
        image_size=32,
        in_channels=4,
        out_channels=4,
        model_channels=320,
        num_res_blocks=[1],
        channel_mult=[1],
        transformer_depth=[1],
        transformer_depth_output=[1, 1],
        transformer_depth_middle=1,
        context_dim=768,
        num_heads=8,
        num_head_channels=-1,
        use_spatial_transformer=True,
        use_linear_in_transformer=False,
        legacy=False,
        use_checkpoint=False,
    )
    unet = _init(UNetModel(**unet_cfg, operations=ops))
    sd = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    if controlnet:  # a matching ControlNet instead: original layout, zero convs random so it acts
        from comfy.cldm.cldm import ControlNet

        cfg = {k: v for k, v in unet_cfg.items() if k not in ("out_channels", "transformer_depth_output")}
        net = _init(ControlNet(hint_channels=3, **cfg, operations=ops))
        # unit-gain hint path and zero convs, so the hint visibly steers the tiny UNet (tests compare hints)
        for part in (net.input_hint_block, net.zero_convs, net.middle_block_out):
            for m in part.modules():
                if isinstance(m, torch.nn.Conv2d):
                    torch.nn.init.normal_(m.weight, std=(2.0 / m.weight[0].numel()) ** 0.5)
        return dict(net.state_dict())

    ddconfig = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    vae = _init(AutoencoderKL(ddconfig=ddconfig, embed_dim=4))
    sd.update({"first_stage_model." + k: v for k, v in vae.state_dict().items()})

    clip_cfg = json.loads((comfy_dir / "comfy" / "sd1_clip_config.json").read_text())
    clip = _init(comfy.clip_model.CLIPTextModel(clip_cfg, dtype=torch.float32, device="cpu", operations=ops))
    sd.update({"cond_stage_model.transformer." + k: v for k, v in clip.state_dict().items()})
    # position_ids are a buffer in the reference checkpoints; keep integer tensors as they are
    return sd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--comfy-dir", type=Path, default=Path(os.environ.get("COMFY_DIR", DEFAULT_COMFY)))
    ap.add_argument("--fp16", action="store_true", help="store floating tensors as fp16 (half the size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--controlnet", action="store_true", help="write a ControlNet matching the tiny UNet instead")
    a = ap.parse_args(argv)
    if not (a.comfy_dir / "comfy" / "sd1_clip_config.json").is_file():
        ap.error(f"{a.comfy_dir} is not a ComfyUI folder (run scripts/setup_comfy_host.sh)")

    t0 = time.time()
    from safetensors.torch import save_file

    sd = build_state_dict(a.comfy_dir.resolve(), a.seed, a.controlnet)
    sd = {k: (v.half() if a.fp16 and v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "tav_note": "random weights, SD1.x-shaped, for tests"})
    os.replace(tmp, a.out)
    n = sum(v.numel() for v in sd.values())
    print(
        f"{a.out}: {len(sd)} tensors, {n / 1e6:.1f} M params, "
        f"{a.out.stat().st_size / 2**20:.0f} MiB, {time.time() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
