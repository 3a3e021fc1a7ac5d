"""Train the shapes-world toy text-to-image model: ``python -m tav.shapes.train --out DIR``.

Why: Tune-A-Video needs a pretrained text-to-image model that knows something. No Stable
Diffusion weights are reachable here, so this script trains a tiny one, on CPU, in the exact
formats of a real one (a diffusers ``StableDiffusionPipeline`` folder: AutoencoderKL,
CLIPTextModel + the real CLIP BPE tokenizer, UNet2DConditionModel with SD's cross-attention
blocks, DDIM scheduler config). It then goes through the same loading, inflation, tuning,
inversion and sampling code as Stable Diffusion.

Recipe (lessons of the issue's probe): the VAE is trained first, with its pixel loss weighted
toward object pixels (plain loss loses small objects' colours), until the analyzer reads >= 98%
of its reconstructions correctly; then the text encoder and the UNet are trained jointly with
v-prediction (epsilon collapsed in short runs), 10% empty captions for classifier-free guidance,
and an EMA of the weights. Deterministic for a fixed seed and thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import analyzer, world

LATENT_CHANNELS = 4
TEXT_DIM = 64
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="v_prediction",
)
#: where the CLIP BPE files come from, first hit wins
TOKENIZER_SOURCES = (
    Path(__file__).resolve().parent.parent / "assets" / "clip_tokenizer",
    Path(__file__).resolve().parent.parent / "assets" / "shapes_model" / "tokenizer",
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ model configs


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=world.SIZE,
    )


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=world.SIZE // 4,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=TEXT_DIM,
        intermediate_size=4 * TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=TEXT_DIM,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(cfg)


def write_tokenizer(dst: Path) -> None:
    """SD's tokenizer folder layout (vocab.json + merges.txt), so any CLIPTokenizer loader reads it."""
    src = next((p for p in TOKENIZER_SOURCES if (p / "vocab.json").exists() and (p / "merges.txt").exists()), None)
    if src is None:
        raise FileNotFoundError(
            "CLIP BPE files (vocab.json, merges.txt) not found in " + ", ".join(map(str, TOKENIZER_SOURCES))
        )
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        if (src / name).resolve() != (dst / name).resolve():
            shutil.copyfile(src / name, dst / name)
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (dst / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    cfg = dict(
        special,
        tokenizer_class="CLIPTokenizer",
        model_max_length=77,
        do_lower_case=True,
        add_prefix_space=False,
        errors="replace",
    )
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


# ------------------------------------------------------------------------------------- data


def make_dataset(n: int, seed: int, two_object_share: float = 0.35) -> tuple[np.ndarray, list[str]]:
    """``n`` random scenes: uint8 images ``[n, 64, 64, 3]`` and their captions."""
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, world.SIZE, world.SIZE, 3), dtype=np.uint8)
    caps = []
    for i in range(n):
        scene = world.random_scene(rng, 2 if rng.random() < two_object_share else 1)
        imgs[i] = np.round(world.render(scene) * 255).astype(np.uint8)
        caps.append(scene.caption)
    return imgs, caps


def to_pixels(batch_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch_u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def object_weight(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss weight, 10x on object pixels (distance from the border's median colour)."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    bg = border.median(dim=2).values[:, :, None, None]
    fg = ((x - bg).abs().amax(dim=1, keepdim=True) / 0.5).clamp(0, 1)
    return 1.0 + 9.0 * fg


# -------------------------------------------------------------------------------------- VAE


@torch.no_grad()
def vae_accuracy(vae, imgs: np.ndarray, caps: list[str], batch: int = 50) -> dict[str, float]:
    """Analyzer accuracy on reconstructions (posterior mean), single- and two-object separately."""
    vae.eval()
    hits: dict[str, list[bool]] = {"single": [], "two": []}
    for i in range(0, len(imgs), batch):
        x = to_pixels(imgs[i : i + batch])
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        rec = ((rec + 1) / 2).permute(0, 2, 3, 1).numpy()
        for r, c in zip(rec, caps[i : i + batch], strict=False):
            hits["two" if " and " in c else "single"].append(analyzer.frame_matches(analyzer.analyze_frame(r), c))
    vae.train()
    return {k: float(np.mean(v)) for k, v in hits.items() if v}


def train_vae(
    imgs: np.ndarray,
    val: tuple[np.ndarray, list[str]],
    *,
    seed: int,
    batch: int,
    chunk: int,
    max_steps: int,
    target: float,
):
    """Train until the analyzer reads ``target`` of validation reconstructions right (checked every ``chunk``)."""
    torch.manual_seed(seed)
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed + 1)
    step, t0 = 0, time.time()
    acc: dict[str, float] = {}
    while step < max_steps:
        for _ in range(chunk):
            lr = 2e-3 * min(1.0, (step + 1) / 100)
            for g in opt.param_groups:
                g["lr"] = lr
            x = to_pixels(imgs[rng.integers(0, len(imgs), size=batch)])
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            w = object_weight(x)
            rec_loss = (w * (rec - x).abs()).mean() + (w * (rec - x) ** 2).mean()
            kl = post.kl().mean() / (LATENT_CHANNELS * post.mean[0, 0].numel())
            loss = rec_loss + 1e-4 * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 50 == 0:
                log(f"vae step {step} loss {rec_loss.item():.4f} kl {kl.item():.3f} ({time.time() - t0:.0f}s)")
        acc = vae_accuracy(vae, *val)
        log(f"vae step {step}: analyzer accuracy on reconstructions {acc}")
        if acc.get("single", 0) >= target and acc.get("two", 1) >= target - 0.05:
            break
    return vae, step, acc


@torch.no_grad()
def encode_all(vae, imgs: np.ndarray, batch: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    vae.eval()
    means, stds = [], []
    for i in range(0, len(imgs), batch):
        d = vae.encode(to_pixels(imgs[i : i + batch])).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


# ------------------------------------------------------------------------------- UNet + text


def train_unet(
    means: torch.Tensor,
    stds: torch.Tensor,
    caps: list[str],
    tokenizer,
    scale: float,
    *,
    seed: int,
    batch: int,
    steps: int,
    lr: float,
    init: Optional[dict] = None,
    warmup: int = 200,
):
    """Joint text-encoder + UNet training with v-prediction; returns EMA copies of both.

    ``init`` (``{"unet": state, "te": state}``) continues from earlier weights (phase 2).
    """
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    unet, te = make_unet(), make_text_encoder()
    if init is not None:
        unet.load_state_dict(init["unet"])
        te.load_state_dict(init["te"])
    ema_unet, ema_te = make_unet(), make_text_encoder()
    ema_unet.load_state_dict(unet.state_dict())
    ema_te.load_state_dict(te.state_dict())
    for m in (ema_unet, ema_te):
        m.requires_grad_(False)
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER.items() if k not in ("set_alpha_to_one", "steps_offset")})
    uniq = sorted(set(caps)) + [""]
    ids = tokenizer(uniq, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    cap_index = torch.tensor([uniq.index(c) for c in caps])
    empty = len(uniq) - 1
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    g = torch.Generator().manual_seed(seed + 2)
    t0, losses = time.time(), []
    for step in range(steps):
        warm = min(1.0, (step + 1) / warmup)
        decay = 1.0 if step < 0.8 * steps else max(0.05, (steps - step) / (0.2 * steps))
        for grp in opt.param_groups:
            grp["lr"] = lr * warm * decay
        idx = torch.randint(0, len(means), (batch,), generator=g)
        z = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * scale
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        drop = torch.rand(batch, generator=g) < 0.1
        tok = ids[torch.where(drop, torch.full_like(idx, empty), cap_index[idx])]
        cond = te(tok)[0]
        pred = unet(sched.add_noise(z, noise, t), t, cond).sample
        loss = F.mse_loss(pred, sched.get_velocity(z, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_te, te)):
                for pe, pl in zip(ema.parameters(), live.parameters(), strict=False):
                    pe.mul_(d).add_(pl.detach(), alpha=1 - d)
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            recent = float(np.mean(losses[-50:]))
            log(f"unet step {step + 1}/{steps} loss {recent:.4f} lr {lr * warm * decay:.2e} ({time.time() - t0:.0f}s)")
    return ema_unet, ema_te


# ------------------------------------------------------------------------------ 2-D sampling


@torch.no_grad()
def sample_images(
    unet,
    te,
    vae,
    tokenizer,
    scale: float,
    prompts: list[str],
    *,
    seed: int,
    steps: int = 30,
    guidance: float = 5.0,
    batch: int = 60,
) -> np.ndarray:
    """Plain 2-D DDIM text-to-image sampling (CFG), one seed per prompt index: ``[N, 64, 64, 3]``."""
    from diffusers import DDIMScheduler

    out = []
    for i in range(0, len(prompts), batch):
        ps = prompts[i : i + batch]
        sched = DDIMScheduler(**SCHEDULER)
        sched.set_timesteps(steps)
        ids = tokenizer(
            ps + [""] * len(ps), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        emb = te(ids)[0]
        z = torch.stack(
            [
                torch.randn(
                    LATENT_CHANNELS,
                    world.SIZE // 4,
                    world.SIZE // 4,
                    generator=torch.Generator().manual_seed(seed + i + j),
                )
                for j in range(len(ps))
            ]
        )
        for t in sched.timesteps:
            v = unet(torch.cat([z, z]), t, emb).sample
            vc, vu = v.chunk(2)
            z = sched.step(vu + guidance * (vc - vu), t, z).prev_sample
        x = vae.decode(z / scale).sample.clamp(-1, 1)
        out.append(((x + 1) / 2).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def t2i_prompts(n: int, seed: int, two_object: bool = False) -> list[str]:
    """Fixed evaluation prompts: every single-object combination in turn (or random pairs)."""
    rng = np.random.default_rng(seed)
    if not two_object:
        combos = [
            world.caption_for([(c, s)], b) for b in world.BACKGROUNDS for c in world.COLOURS for s in world.SHAPES
        ]
        return [combos[i % len(combos)] for i in range(n)]
    return [world.random_scene(rng, 2).caption for _ in range(n)]


def t2i_accuracy(images: np.ndarray, prompts: list[str]) -> dict[str, float]:
    """Analyzer-judged colour / shape / both (largest object) and exact-match rates."""
    readings = [analyzer.analyze_frame(im) for im in images]
    col = shp = both = exact = 0
    for r, p in zip(readings, prompts, strict=False):
        objs, _ = world.parse_caption(p)
        exact += analyzer.frame_matches(r, p)
        if len(objs) == 1 and r.objects:
            col += r.objects[0].colour == objs[0][0]
            shp += r.objects[0].shape == objs[0][1]
            both += (r.objects[0].colour, r.objects[0].shape) == objs[0]
    n = len(prompts)
    return {"colour": col / n, "shape": shp / n, "colour+shape": both / n, "exact": exact / n, "n": n}


# --------------------------------------------------------------------------------------- save


def save_model(out: Path, vae, unet, te, scale: float, meta: dict) -> None:
    """A StableDiffusionPipeline folder with fp16 safetensors, like any SD 1.x checkpoint."""
    from diffusers import DDIMScheduler

    out.mkdir(parents=True, exist_ok=True)
    vae.register_to_config(scaling_factor=float(scale))
    for name, m in (("vae", vae), ("unet", unet), ("text_encoder", te)):
        m.to(torch.float16).save_pretrained(out / name, safe_serialization=True)
        m.to(torch.float32)
    DDIMScheduler(**SCHEDULER).save_pretrained(out / "scheduler")
    write_tokenizer(out / "tokenizer")
    import diffusers

    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "TRAINING.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_components(folder: Path):
    """(vae, unet, text_encoder, tokenizer, scale) in fp32 from a saved folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    te = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32)
    return vae, unet, te, load_tokenizer(folder / "tokenizer"), float(vae.config.scaling_factor)


# --------------------------------------------------------------------------------------- main


def evaluate_t2i(
    vae, unet, te, tok, scale: float, *, n: int = 120, steps: int = 30, guidance: float = 5.0, seed: int = 1000
) -> dict:
    prompts = t2i_prompts(n, seed)
    single = t2i_accuracy(
        sample_images(unet, te, vae, tok, scale, prompts, seed=seed, steps=steps, guidance=guidance), prompts
    )
    prompts2 = t2i_prompts(n // 2, seed, two_object=True)
    two = t2i_accuracy(
        sample_images(unet, te, vae, tok, scale, prompts2, seed=seed, steps=steps, guidance=guidance), prompts2
    )
    return {
        "single": single,
        "two_object_exact": two["exact"],
        "two_object_n": two["n"],
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
    }


def main(argv: Optional[list[str]] = None, progress: Optional[Callable[[str], None]] = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "assets" / "shapes_model")
    ap.add_argument("--work", type=Path, default=Path(".cache/shapes_train"), help="intermediate files (VAE, latents)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="results are deterministic per seed and thread count")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-chunk", type=int, default=200)
    ap.add_argument("--vae-max-steps", type=int, default=3000)
    ap.add_argument("--unet-batch", type=int, default=64)
    ap.add_argument("--unet-steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--unet-steps2", type=int, default=1500, help="phase 2: more steps from phase 1's EMA weights")
    ap.add_argument("--lr2", type=float, default=3e-4)
    ap.add_argument("--eval-samples", type=int, default=120)
    ap.add_argument("--eval-steps", type=int, default=30, help="DDIM steps of the T2I check")
    ap.add_argument("--guidance", type=float, default=5.0, help="CFG scale of the T2I check")
    ap.add_argument("--stage", choices=("all", "vae", "unet", "unet2", "eval"), default="all")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    t_start, c_start = time.time(), time.process_time()
    if args.stage == "eval":  # re-judge the shipped folder only
        vae, unet, te, tok, scale = load_components(args.out)
        res = evaluate_t2i(
            vae, unet, te, tok, scale, n=args.eval_samples, steps=args.eval_steps, guidance=args.guidance
        )
        log(f"T2I accuracy ({time.time() - t_start:.0f}s): {json.dumps(res)}")
        return

    log(f"rendering {args.images} training + 400 validation images")
    imgs, caps = make_dataset(args.images, args.seed)
    val_imgs, val_caps = make_dataset(400, args.seed + 12345)
    vae_path = args.work / "vae"
    meta: dict = {
        "command": "python -m tav.shapes.train " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "seed": args.seed,
        "threads": args.threads,
    }

    if args.stage in ("all", "vae") or not (vae_path / "config.json").exists():
        t0 = time.time()
        vae, vsteps, vacc = train_vae(
            imgs,
            (val_imgs, val_caps),
            seed=args.seed,
            batch=args.vae_batch,
            chunk=args.vae_chunk,
            max_steps=args.vae_max_steps,
            target=0.98,
        )
        vae.save_pretrained(vae_path)
        (args.work / "vae.json").write_text(
            json.dumps({"steps": vsteps, "accuracy": vacc, "seconds": time.time() - t0})
        )
        log(f"VAE done: {vsteps} steps, reconstructions read correctly: {vacc} ({time.time() - t0:.0f}s)")
        if args.stage == "vae":
            return
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_path)
    meta["vae"] = json.loads((args.work / "vae.json").read_text())
    means, stds = encode_all(vae, imgs)
    scale = float(1.0 / means.std())
    log(f"latents {tuple(means.shape)}, scaling factor {scale:.4f}")
    tok_dir = args.work / "tokenizer"
    write_tokenizer(tok_dir)
    tok = load_tokenizer(tok_dir)

    ckpt = args.work / "unet_te.pt"
    if args.stage in ("all", "unet") or not ckpt.exists():  # phase 1
        t0 = time.time()
        unet, te = train_unet(
            means, stds, caps, tok, scale, seed=args.seed, batch=args.unet_batch, steps=args.unet_steps, lr=args.lr
        )
        torch.save({"unet": unet.state_dict(), "te": te.state_dict()}, ckpt)
        meta["unet"] = {"steps": args.unet_steps, "batch": args.unet_batch, "seconds": time.time() - t0}
        (args.work / "unet.json").write_text(json.dumps(meta["unet"]))
    else:
        state = torch.load(ckpt, weights_only=True)
        unet, te = make_unet(), make_text_encoder()
        unet.load_state_dict(state["unet"])
        te.load_state_dict(state["te"])
        meta["unet"] = json.loads((args.work / "unet.json").read_text())
    if args.unet_steps2 > 0:  # phase 2: continue from the EMA weights at a lower learning rate
        ckpt2 = args.work / "unet_te_2.pt"
        if args.stage in ("all", "unet", "unet2") or not ckpt2.exists():
            t0 = time.time()
            init = {"unet": unet.state_dict(), "te": te.state_dict()}
            unet, te = train_unet(
                means, stds, caps, tok, scale, seed=args.seed + 100, batch=args.unet_batch,
                steps=args.unet_steps2, lr=args.lr2, init=init, warmup=50,
            )  # fmt: skip
            torch.save({"unet": unet.state_dict(), "te": te.state_dict()}, ckpt2)
            meta["unet2"] = {"steps": args.unet_steps2, "lr": args.lr2, "seconds": time.time() - t0}
            (args.work / "unet2.json").write_text(json.dumps(meta["unet2"]))
        else:
            state = torch.load(ckpt2, weights_only=True)
            unet.load_state_dict(state["unet"])
            te.load_state_dict(state["te"])
            meta["unet2"] = json.loads((args.work / "unet2.json").read_text())
    unet.eval()
    te.eval()
    meta["train_wall_seconds_this_run"] = time.time() - t_start
    meta["train_cpu_seconds_this_run"] = time.process_time() - c_start
    save_model(args.out, vae, unet, te, scale, meta)
    # judge what was shipped: reload the fp16 files
    vae, unet, te, tok, scale = load_components(args.out)
    t0 = time.time()
    meta["t2i"] = evaluate_t2i(
        vae, unet, te, tok, scale, n=args.eval_samples, steps=args.eval_steps, guidance=args.guidance
    )
    meta["t2i"]["seconds"] = time.time() - t0
    (args.out / "TRAINING.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"T2I accuracy: {json.dumps(meta['t2i'])}")
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    log(f"saved {args.out} ({size / 1e6:.1f} MB) in {time.time() - t_start:.0f}s wall")


if __name__ == "__main__":
    main()
