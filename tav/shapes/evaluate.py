"""The paper's evaluation and ablations at toy scale: ``python -m tav.shapes.evaluate``.

Why: with the shipped shapes model and the deterministic analyzer, every claim of the paper's
Sec. 5.3 and Tab. 1 becomes a number that anyone can reproduce on a CPU. For each bundled clip and
edited prompt, on identical inputs and seeds, it runs:

- ``tav``: full Tune-A-Video (sparse-causal attention, tuning, DDIM inversion);
- ``no_sparse_causal``: the same but every frame attends only to itself (tuned the same way);
- ``no_inversion``: the tuned model sampled from seeded random noise instead of the inverted clip;
- ``no_tuning``: inflated only (sparse-causal + zero-initialised temporal layers), inverted, sampled;
- ``per_frame``: the 2-D model alone: every frame DDIM-inverted and re-sampled independently.

Diagnostic variants (``--variants``, see :data:`DIAGNOSTIC`) change one thing at a time, to say
why a claim does or does not hold: GroupNorm over all frames alone, sparse-causal attention alone,
the untuned model from noise (what tuning adds when inversion does not carry the motion), and full
Tune-A-Video with per-frame GroupNorm (the ``inflate(norm="frame")`` option).

Clips: the 13 bundled ones (``--set bundled``) or the generated development / test split
(``--set dev|test``, :mod:`tav.shapes.generated`). Writes a markdown report in which every mean and
paired difference carries a 95 % interval over clips and each claim a verdict
(:mod:`tav.shapes.report`), a contact-sheet PNG, GIFs of a few cases, and the raw rows and the
summary as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..tuning import DEFAULT_TRAINABLE
from . import analyzer, generated, report
from .clips import EVAL_CLIPS, Edit, edits_for
from .variants import ALL, LABELS, VARIANTS, Variant
from .world import Clip

MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes_model"


@dataclasses.dataclass
class EvalConfig:
    """Settings shared by every variant (identical inputs and seeds)."""

    tune_steps: int = 200
    tune_lr: float = 3e-4
    steps: int = 25  # DDIM steps for inversion and sampling
    guidance: float = 5.0
    seed: int = 0
    tune_seed: int = 33
    trainable: tuple[str, ...] = DEFAULT_TRAINABLE


def load_toy(model_dir: Path | str = MODEL_DIR):
    """The shipped shapes model through the same loader as any Stable Diffusion folder."""
    from ..checkpoints import load_pipeline

    return load_pipeline(model_dir)


def edit_clip(
    pipe2d,
    clip: Clip,
    edits: Sequence[Edit],
    cfg: EvalConfig,
    variants: Sequence[str | Variant] = VARIANTS,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, torch.Tensor]]:
    """All variants' edited videos for one clip: ``{variant: {edit prompt: frames [F,H,W,3]}}``.

    ``variants``: names from :data:`ALL`, or :class:`Variant` specs (keyed by their label).

    Variants that share a model share it: each (attention, norm, tuned) model is built, tuned and
    inverted once per clip, so the comparison runs on identical models, latents and seeds.
    """
    from ..ddim import invert, sample
    from ..inflation import inflate
    from ..tuning import TuneConfig, tune

    frames = torch.from_numpy(clip.frames())
    lat = pipe2d.encode_video(frames)
    src_emb = pipe2d.encode_prompt(clip.caption)
    embs = {e.prompt: pipe2d.encode_prompt(e.prompt) for e in edits}
    tcfg = TuneConfig(
        steps=cfg.tune_steps,
        lr=cfg.tune_lr,
        seed=cfg.tune_seed,
        trainable_modules=cfg.trainable,
        gradient_checkpointing=False,
    )
    models: dict[tuple, Any] = {}
    inversions: dict[tuple, torch.Tensor] = {}

    def build(v: Variant):
        key = v.model_key
        if key not in models:
            if not v.inflated:
                models[key] = pipe2d
            elif v.tuned:
                t0 = time.time()
                models[key] = tune(build(dataclasses.replace(v, tuned=False)), lat, src_emb, tcfg).pipeline
                log(f"  {clip.name} tuned ({v.attention} attention, {v.norm} norm) in {time.time() - t0:.0f}s")
            else:
                models[key] = inflate(
                    pipe2d, attention=v.attention, norm=v.norm, zero_temporal_bias=True, seed=cfg.seed
                )
        return models[key]

    def start(v: Variant) -> Optional[torch.Tensor]:
        key = v.model_key
        if v.inverted and key not in inversions:
            inversions[key] = invert(build(v), lat, steps=cfg.steps)
        return inversions[key] if v.inverted else None

    out: dict[str, dict[str, torch.Tensor]] = {}
    for item in variants:
        t0 = time.time()
        spec = item if isinstance(item, Variant) else ALL[item]
        name = item.label if isinstance(item, Variant) else item
        pipe, z0 = build(spec), start(spec)
        res = {}
        for p, emb in embs.items():
            z = sample(
                pipe,
                emb,
                latents=z0,
                frames=clip.n_frames,
                height=frames.shape[1],
                width=frames.shape[2],
                steps=cfg.steps,
                guidance_scale=cfg.guidance,
                seed=cfg.seed,
            )
            res[p] = pipe.decode_latents(z)
        out[name] = res
        log(f"  {clip.name} {name}: {len(res)} edits in {time.time() - t0:.0f}s")
    return out


# ------------------------------------------------------------------------------------ report


def report_header(cfg: EvalConfig, meta: dict) -> str:
    """The report's title and settings: what was run, on which set, at what cost."""
    title = {"bundled": "the 13 bundled (hand-picked) clips", "dev": "the development set", "test": "the test set"}
    return "\n".join(
        [
            f"# Tune-A-Video on the shapes world: {title[meta.get('set', 'bundled')]}",
            "",
            f"{meta['clips']} clips x their edits = {meta['videos']} edited videos per variant; "
            f"tuning {cfg.tune_steps} steps at lr {cfg.tune_lr:g}, DDIM {cfg.steps} steps, guidance {cfg.guidance:g}, "
            f"seed {cfg.seed}; trainable {', '.join(cfg.trainable)}; {meta['seconds']:.0f} s of runs on "
            f"{meta['threads']} CPU thread(s) each.",
        ]
    )


def contact_sheet(
    path: Path, cases: list[tuple[str, torch.Tensor, dict[str, torch.Tensor]]], n_show: int = 4, zoom: int = 2
) -> None:
    """One row per case: source then each variant, ``n_show`` frames each, labelled."""
    from PIL import Image, ImageDraw

    names = ["source"] + list(cases[0][2])
    cell = 64 * zoom
    gap, label_h, left = 6, 14, 210
    width = left + len(names) * (n_show * cell + gap)
    height = label_h + len(cases) * (cell + gap)
    sheet = Image.new("RGB", (width, height), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    for j, n in enumerate(names):
        draw.text((left + j * (n_show * cell + gap), 1), n, fill=(255, 255, 255))
    for i, (title, src, outs) in enumerate(cases):
        y = label_h + i * (cell + gap)
        draw.text((2, y + cell // 2 - 12), title[:34], fill=(255, 255, 255))
        draw.text((2, y + cell // 2), title[34:68], fill=(255, 255, 255))
        for j, video in enumerate([src] + [outs[n] for n in names[1:]]):
            idx = np.linspace(0, len(video) - 1, n_show).round().astype(int)
            for k, f in enumerate(idx):
                img = Image.fromarray((video[f].clamp(0, 1).numpy() * 255).round().astype(np.uint8))
                sheet.paste(img.resize((cell, cell), Image.NEAREST), (left + j * (n_show * cell + gap) + k * cell, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def _save_cases(path: Path, cases: list) -> None:
    """Edited videos as uint8 arrays, so shards can be merged into one report later."""
    arrays = {}
    titles = []
    for k, (title, src, outs) in enumerate(cases):
        titles.append(title)
        arrays[f"{k}/source"] = (src.numpy() * 255).round().astype(np.uint8)
        for v, frames in outs.items():
            arrays[f"{k}/{v}"] = (frames.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    np.savez_compressed(path, titles=np.asarray(titles), **arrays)


def _load_cases(path: Path) -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``{title: (source, {variant: frames})}`` for whatever variants that shard ran."""
    data = np.load(path)
    out = {}
    for k, title in enumerate(data["titles"]):
        frames = {
            key.split("/", 1)[1]: torch.from_numpy(data[key].astype(np.float32) / 255)
            for key in data.files
            if key.startswith(f"{k}/")
        }
        out[str(title)] = (frames.pop("source"), frames)
    return out


def run_clips(
    pipe,
    clips: Sequence[tuple[Clip, Sequence[Edit]]],
    cfg: EvalConfig,
    variants: Sequence[str],
    checkpoint: Optional[Path] = None,
) -> tuple[list[dict], list]:
    """Edit every clip with every variant; metrics rows and (title, source, outputs) cases.

    With ``checkpoint``, the rows so far are written there after every clip, so a run cut short
    still leaves every finished clip's numbers.
    """
    rows: list[dict[str, Any]] = []
    cases = []
    for ci, (clip, edits) in enumerate(clips):
        print(f"[{ci + 1}/{len(clips)}] {clip.name}: {clip.caption} ({clip.note})", flush=True)
        src = torch.from_numpy(clip.frames())
        src_r = analyzer.analyze_video(src)
        outs = edit_clip(pipe, clip, edits, cfg, variants, log=lambda s: print(s, flush=True))
        fast = max(t.speed for t in clip.tracks) > 1.0 or any(t.path == "circle" for t in clip.tracks)
        for e in edits:
            for v in variants:
                met = analyzer.video_metrics(outs[v][e.prompt], src, clip.caption, e.prompt, src_r)
                row = dict(
                    clip=clip.name,
                    kind=e.kind,
                    prompt=e.prompt,
                    variant=v,
                    objects=len(clip.tracks),
                    fast=fast,
                    frames=clip.n_frames,
                    seed=cfg.seed,
                )
                rows.append({**row, **met})
            cases.append((f"{clip.name}: {e.prompt}", src, {v: outs[v][e.prompt] for v in variants}))
        if checkpoint is not None:
            checkpoint.write_text(json.dumps(rows, indent=1))
    return rows, cases


def finalize(
    out: Path, rows: list, cases: list, variants: Sequence[str], cfg: EvalConfig, meta: dict, gifs: int
) -> str:
    """Report, contact sheet and GIFs from all rows and cases."""
    from ..video_io import side_by_side, write_video

    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    summary = report.summarize(rows, variants)
    (out / "summary.json").write_text(
        json.dumps({"meta": meta, "config": dataclasses.asdict(cfg), **summary}, indent=1)
    )
    text = report.write_report(summary, LABELS, report_header(cfg, meta))
    (out / "report.md").write_text(text)
    pick = [cases[i] for i in np.linspace(0, len(cases) - 1, min(8, len(cases))).round().astype(int)]
    contact_sheet(out / "contact_sheet.png", pick)
    for i in np.linspace(0, len(cases) - 1, min(gifs, len(cases))).round().astype(int):
        title, src, outs = cases[i]
        clip_name, prompt = title.split(": ", 1)
        name = clip_name + "__" + prompt.replace(" on a ", " on ").replace(" background", "").replace(" ", "_")
        write_video(out / f"{name}.gif", side_by_side(src, *outs.values()), fps=4)
    return text


def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL_DIR)
    ap.add_argument("--out", type=Path, default=Path("outputs/shapes_eval"))
    ap.add_argument(
        "--set",
        choices=("bundled", "dev", "test"),
        default="bundled",
        help="bundled: the 13 hand-picked clips; dev/test: the generated split (tav.shapes.generated)",
    )
    ap.add_argument("--clips", nargs="*", default=None, help="clip names (default: the whole set)")
    ap.add_argument(
        "--variants", nargs="*", default=list(VARIANTS), choices=list(ALL), help="default: the paper's five"
    )
    ap.add_argument("--tune-steps", type=int, default=EvalConfig.tune_steps)
    ap.add_argument("--tune-lr", type=float, default=EvalConfig.tune_lr)
    ap.add_argument("--steps", type=int, default=EvalConfig.steps)
    ap.add_argument("--guidance", type=float, default=EvalConfig.guidance)
    ap.add_argument("--seed", type=int, default=EvalConfig.seed)
    ap.add_argument("--trainable", nargs="+", default=list(DEFAULT_TRAINABLE), help="module-name suffixes to tune")
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared machine")
    ap.add_argument("--gifs", type=int, default=4, help="how many cases get a side-by-side GIF")
    ap.add_argument("--shard", default=None, help="K/N: run every N-th clip from K into OUT/shard_K (parallel runs)")
    ap.add_argument("--merge", action="store_true", help="only merge OUT/shard_* into the report")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = EvalConfig(
        args.tune_steps, args.tune_lr, args.steps, args.guidance, args.seed, trainable=tuple(args.trainable)
    )
    every = [(c, edits_for(c)) for c in EVAL_CLIPS] if args.set == "bundled" else generated.eval_set(args.set)
    clips = [(c, e) for c, e in every if args.clips is None or c.name in args.clips]
    if not clips:
        raise SystemExit(f"no clips selected; known: {', '.join(c.name for c, _ in every)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        shards = sorted(d for d in args.out.glob("shard_*") if d.is_dir())
        rows, by_title, seconds, configs = [], {}, 0.0, set()
        for d in shards:  # shards may split clips, variants, or both
            rows += [r for r in json.loads((d / "rows.json").read_text()) if r["variant"] in args.variants]
            for title, (src, outs) in _load_cases(d / "cases.npz").items():
                by_title.setdefault(title, (src, {}))[1].update(outs)
            shard_meta = json.loads((d / "meta.json").read_text())
            seconds += shard_meta["seconds"]
            configs.add(json.dumps(shard_meta.get("config", dataclasses.asdict(cfg)), sort_keys=True))
        if len(configs) > 1:
            raise SystemExit(f"the shards in {args.out} ran with different settings: {' / '.join(sorted(configs))}")
        if configs:  # the report states the settings the shards ran with, not the merge's defaults
            shard_cfg = json.loads(configs.pop())
            cfg = EvalConfig(**{**shard_cfg, "trainable": tuple(shard_cfg["trainable"])})
        missing = sorted({v for _, outs in by_title.values() for v in args.variants if v not in outs})
        if missing:
            raise SystemExit(f"the shards in {args.out} lack variant(s) {', '.join(missing)}: run them or drop them")
        cases = [(t, src, {v: outs[v] for v in args.variants}) for t, (src, outs) in by_title.items()]
        order = {c.name: i for i, (c, _) in enumerate(every)}
        rows.sort(key=lambda r: order[r["clip"]])
        cases.sort(key=lambda c: order[c[0].split(":")[0]])
        meta = {
            "clips": len({r["clip"] for r in rows}),
            "videos": len(cases),
            "seconds": seconds,
            "threads": args.threads,
            "set": args.set,
        }
        text = finalize(args.out, rows, cases, args.variants, cfg, meta, args.gifs)
        print(text)
        return {"rows": rows, "meta": meta}
    out = args.out
    if args.shard:
        k, n = (int(x) for x in args.shard.split("/"))
        clips = clips[k::n]
        out = args.out / f"shard_{k}"
        out.mkdir(parents=True, exist_ok=True)
    pipe = load_toy(args.model)
    t_start = time.time()
    rows, cases = run_clips(pipe, clips, cfg, args.variants, checkpoint=out / "rows.json")
    meta = {
        "clips": len(clips),
        "videos": len(cases),
        "seconds": time.time() - t_start,
        "threads": args.threads,
        "set": args.set,
        "config": dataclasses.asdict(cfg),
    }
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    _save_cases(out / "cases.npz", cases)
    if args.shard:
        print(f"shard done: {out} ({meta['seconds']:.0f}s)")
        return {"rows": rows, "meta": meta}
    text = finalize(out, rows, cases, args.variants, cfg, meta, args.gifs)
    print(text)
    print(f"wrote {out}/report.md, contact_sheet.png, GIFs ({meta['seconds']:.0f}s)")
    return {"rows": rows, "meta": meta}


if __name__ == "__main__":
    main()
