"""Long clips on the shapes world: ``python -m tav.shapes.long_eval``.

Why: a model tuned on 8 frames must edit a 32- or 64-frame clip at one window's memory, and the
windows must not show where they meet. On identical tuned weights, latents and seeds, this edits
each clip with:

- ``anchored``: windows of 8, overlap 2, the clip's frame 0 anchoring every window (the default);
- ``anchored_shared_norm``: the same, GroupNorm statistics shared from the first window;
- ``no_anchor``: windows of 8, overlap 2, each window anchored on its own first frame;
- ``chunks``: independent 8-frame chunks (no overlap, no anchor): each chunk edited on its own;
- ``one_pass``: the whole clip in one pass (memory grows with frames; GroupNorm over the clip);
- ``per_frame``: the 2-D model, every frame inverted and sampled on its own.

Metrics are the analyzer's (:mod:`tav.shapes.analyzer`) plus a *seam* metric at every window
boundary: the last frame only the earlier window covers vs the first frame only the later one
covers (for chunks, the two frames either side of the cut); they should show the same colours,
shapes and background (seam agreement), the same object sizes (seam size jump, px) and change as
much as the source does between those frames (seam jump ratio, 1 = as the source). Variants
without windows are measured at the anchored layout's boundaries, as a reference.

Clips: three bundled clips stretched to the length (``--set bundled``, the first report), or the
long-clip test set (``--set test``: :data:`~tav.shapes.generated.LONG_TEST_SEEDS`, drawn at the
length, never used for any choice), whose report gives every mean and paired difference a 95 %
interval over clips (:mod:`tav.shapes.stats`) and a verdict per claim (:data:`CLAIMS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..windows import Windows, even_picks
from . import analyzer, generated, stats
from .clips import Edit, edits_for, get_clip
from .world import Clip

MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes_model"

VARIANTS: dict[str, tuple[str, Optional[Windows]]] = {
    "anchored": ("windows 8/2, frame-0 anchor", Windows(8, 2, anchor=True)),
    "anchored_shared_norm": ("windows 8/2, anchor, shared GroupNorm", Windows(8, 2, anchor=True, norm="first_window")),
    "no_anchor": ("windows 8/2, no anchor", Windows(8, 2, anchor=False)),
    "chunks": ("independent 8-frame chunks", Windows(8, 0, anchor=False)),
    "one_pass": ("whole clip in one pass", None),
    "per_frame": ("per-frame editing (2-D)", None),
}
DEFAULT_CLIPS = ("red_circle_right", "yellow_circle_arc", "two_crossing")
SEAM_METRICS = ("seam_agreement", "seam_size_jump", "seam_jump_ratio")
METRICS = ("textual", "motion_px", "consistency", "size_spread", *SEAM_METRICS, "vs_one_pass")


@dataclasses.dataclass
class LongConfig:
    frames: int = 32
    tune_frames: int = 8
    tune_steps: int = 150
    tune_lr: float = 3e-4
    steps: int = 20
    guidance: float = 5.0
    seed: int = 0
    tune_seed: int = 33
    #: edits per clip, in :func:`~tav.shapes.clips.edits_for` order (colour, shape, both, background)
    edits: int = 2


def seam_pairs(windows: Windows, frames: int) -> list[tuple[int, int]]:
    """``(a, b)`` per boundary: the last frame only window k covers, the first only window k+1 covers."""
    spans = windows.spans(frames)
    return [(nxt[0] - 1, cur[1]) for cur, nxt in zip(spans, spans[1:], strict=False)]


def seam_metrics(
    readings: Sequence[analyzer.FrameReading], out: np.ndarray, src: np.ndarray, pairs: Sequence[tuple[int, int]]
) -> dict[str, float]:
    """Agreement of what the frames either side of each boundary show, their sizes, and the pixel jump."""
    agree, jumps, ratios = [], [], []
    for a, b in pairs:
        ra, rb = readings[a], readings[b]
        agree.append(ra.signature == rb.signature)
        for o in ra.objects:
            ob = rb.find(o.colour)
            if ob is not None:
                jumps.append(abs(o.size - ob.size))
        src_jump = float(np.abs(src[b] - src[a]).mean())
        ratios.append(float(np.abs(out[b] - out[a]).mean()) / max(src_jump, 1e-6))
    return {
        "seam_agreement": float(np.mean(agree)),
        "seam_size_jump": float(np.mean(jumps)) if jumps else float("nan"),
        "seam_jump_ratio": float(np.mean(ratios)),
    }


def long_clip(name: str, frames: int) -> Clip:
    return dataclasses.replace(get_clip(name), n_frames=frames)


def clips_for(set_name: str, names: Optional[Sequence[str]], frames: int, edits: int) -> list[tuple[Clip, list[Edit]]]:
    """The clips of a set at ``frames`` frames, each with its first ``edits`` edits (``names``: a subset)."""
    if set_name == "bundled":
        chosen = [long_clip(n, frames) for n in (names or DEFAULT_CLIPS)]
        return [(c, list(edits_for(c)[:edits])) for c in chosen]
    if set_name != "test":
        raise ValueError(f"unknown set {set_name!r}: use 'bundled' or 'test'")
    seeds = [s for s in generated.LONG_TEST_SEEDS if not names or f"gen{s}" in names]
    if names and len(seeds) != len(names):
        known = ", ".join(f"gen{s}" for s in generated.LONG_TEST_SEEDS)
        raise ValueError(f"unknown clip names in {list(names)}; the long test set has {known}")
    out = []
    for seed in seeds:
        clip = generated.generate_clip(seed, (frames,))
        out.append((clip, generated.generated_edits(clip, seed, edits)))
    return out


def edit_long_clip(
    pipe2d, clip: Clip, edits: Sequence[Edit], cfg: LongConfig, variants: Sequence[str], log=print
) -> dict[str, dict]:
    """``{variant: {edit prompt: frames [F,H,W,3]}}`` for one long clip; one tuned model for all."""
    from ..ddim import invert, sample
    from ..inflation import inflate
    from ..tuning import TuneConfig, tune

    frames = torch.from_numpy(clip.frames())
    lat = pipe2d.encode_video(frames)
    picks = even_picks(clip.n_frames, cfg.tune_frames)
    t0 = time.time()
    tcfg = TuneConfig(steps=cfg.tune_steps, lr=cfg.tune_lr, seed=cfg.tune_seed, gradient_checkpointing=False)
    tuned = tune(inflate(pipe2d), lat[:, :, picks], pipe2d.encode_prompt(clip.caption), tcfg).pipeline
    log(f"  {clip.name}: tuned on frames {picks} in {time.time() - t0:.0f}s")
    embs = {e.prompt: pipe2d.encode_prompt(e.prompt) for e in edits}
    out: dict[str, dict] = {}
    for v in variants:
        t0 = time.time()
        model = pipe2d if v == "per_frame" else tuned
        windows = VARIANTS[v][1]
        z0 = invert(model, lat, steps=cfg.steps, windows=windows)
        out[v] = {
            p: model.decode_latents(
                sample(
                    model, e, latents=z0, steps=cfg.steps, guidance_scale=cfg.guidance, seed=cfg.seed, windows=windows
                )
            )
            for p, e in embs.items()
        }
        log(f"  {clip.name} {v}: {len(embs)} edits in {time.time() - t0:.0f}s")
    return out


def evaluate(
    clip: Clip, edits: Sequence[Edit], outs: dict[str, dict], variants: Sequence[str], seed: int
) -> list[dict[str, Any]]:
    src = clip.frames()
    src_r = analyzer.analyze_video(src)
    rows = []
    for e in edits:
        ref = outs["one_pass"][e.prompt].numpy() if "one_pass" in outs else None
        for v in variants:
            video = outs[v][e.prompt]
            met = analyzer.video_metrics(video, src, clip.caption, e.prompt, src_r)
            layout = VARIANTS[v][1] or VARIANTS["anchored"][1]
            arr = video.numpy()
            met.update(seam_metrics(analyzer.analyze_video(arr), arr, src, seam_pairs(layout, clip.n_frames)))
            met["vs_one_pass"] = float(np.abs(arr - ref).mean()) if ref is not None else float("nan")
            met["seam_jump_dist"] = abs(met["seam_jump_ratio"] - 1)
            rows.append(
                {
                    "clip": clip.name,
                    "frames": clip.n_frames,
                    "kind": e.kind,
                    "prompt": e.prompt,
                    "variant": v,
                    "seed": seed,
                    **met,
                }
            )
    return rows


#: (a, b, metric, sign, claim): "a − b has sign ``sign``" is the claim, judged by its interval
CLAIMS: tuple[tuple[str, str, str, int, str], ...] = (
    ("anchored", "chunks", "seam_jump_dist", -1, "windows jump less at a boundary than chunks (ratio nearer 1)"),
    ("anchored", "chunks", "seam_size_jump", -1, "sizes jump less at a boundary than with chunks"),
    ("anchored", "chunks", "seam_agreement", 1, "the frames either side of a boundary agree more than with chunks"),
    ("anchored", "chunks", "consistency", 1, "more frames agree than with chunks"),
    ("anchored", "no_anchor", "seam_jump_dist", -1, "the frame-0 anchor lowers the jump at a boundary"),
    ("anchored", "no_anchor", "seam_agreement", 1, "the frame-0 anchor: frames either side of a boundary agree more"),
    ("anchored", "no_anchor", "consistency", 1, "the frame-0 anchor: more frames agree"),
    ("anchored", "no_anchor", "textual", 1, "the frame-0 anchor: more faithful to the edit"),
    ("anchored", "per_frame", "consistency", 1, "windows: more frames agree than with per-frame editing"),
    ("anchored", "per_frame", "textual", 1, "windows: more faithful than per-frame editing"),
)
INTERVAL_METRICS = ("textual", "motion_px", "consistency", "size_spread", *SEAM_METRICS, "seam_jump_dist")


def interval_tables(rows: list[dict], variants: Sequence[str]) -> str:
    """Means with 95 % intervals over clips, and every claim's paired difference and verdict, per length."""
    digits = {"motion_px": 1, "size_spread": 1, "seam_size_jump": 1}
    out = []
    for n in sorted({r["frames"] for r in rows}):
        sel = [r for r in rows if r["frames"] == n]
        present = [v for v in variants if any(r["variant"] == v for r in sel)]
        clips = len({r["clip"] for r in sel})
        out += [f"### {n} frames: {clips} clips, {len(sel) // max(len(present), 1)} edited videos per variant", ""]
        out += ["| variant | " + " | ".join(INTERVAL_METRICS) + " |", "|---" * (len(INTERVAL_METRICS) + 1) + "|"]
        for v in present:
            mine = [r for r in sel if r["variant"] == v]
            cells = [
                stats.cluster_bootstrap([r[m] for r in mine], [r["clip"] for r in mine]).fmt(digits.get(m, 2))
                for m in INTERVAL_METRICS
            ]
            out.append(f"| {VARIANTS[v][0]} | " + " | ".join(cells) + " |")
        out += ["", "| claim | verdict | paired difference a − b [95 % interval] |", "|---|---|---|"]
        for a, b, m, sign, text in CLAIMS:
            if {a, b} <= set(present):
                d = stats.paired_interval(sel, a, b, lambda r, m=m: r[m])
                out.append(f"| {text} | **{stats.verdict(d, sign)}** | {m}: {a} − {b} = {d.fmt(digits.get(m, 2))} |")
        out.append("")
    return "\n".join(out)


def _stats(values: Sequence[float], digits: int) -> str:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "n/a"
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f} [{v.min():.{digits}f}, {v.max():.{digits}f}]"


def table(rows: list[dict], variants: Sequence[str], frames: int) -> str:
    """Markdown table: mean ± std [min, max] over edited videos of one clip length."""
    digits = {"motion_px": 1, "size_spread": 1, "seam_size_jump": 1, "vs_one_pass": 3}
    head = "| variant | " + " | ".join(METRICS) + " |"
    lines = [head, "|---" * (len(METRICS) + 1) + "|"]
    for v in variants:
        sel = [r for r in rows if r["variant"] == v and r["frames"] == frames]
        lines.append(
            f"| {VARIANTS[v][0]} | " + " | ".join(_stats([r[m] for r in sel], digits.get(m, 2)) for m in METRICS) + " |"
        )
    return "\n".join(lines)


def per_clip(rows: list[dict], variants: Sequence[str], metric: str, frames: int) -> str:
    """One metric per clip (mean over its edits): the per-clip spread behind the table."""
    clips = sorted({r["clip"] for r in rows if r["frames"] == frames}, key=lambda c: [r["clip"] for r in rows].index(c))
    lines = ["| variant | " + " | ".join(clips) + " |", "|---" * (len(clips) + 1) + "|"]
    for v in variants:
        cells = []
        for c in clips:
            vals = [r[metric] for r in rows if r["variant"] == v and r["clip"] == c and r["frames"] == frames]
            vals = [x for x in vals if np.isfinite(x)]
            cells.append(f"{np.mean(vals):.2f}" if vals else "n/a")
        lines.append(f"| {VARIANTS[v][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(rows: list[dict], a: str, b: str, metric: str, frames: int, higher_better: bool) -> str:
    """``a`` vs ``b`` on the same videos: mean difference and how often ``a`` is better / equal / worse."""
    by = {(r["clip"], r["prompt"], r["variant"]): r[metric] for r in rows if r["frames"] == frames}
    diffs = []
    for (clip, prompt, v), x in by.items():
        y = by.get((clip, prompt, b))
        if v == a and y is not None and np.isfinite(x) and np.isfinite(y):
            diffs.append(x - y if higher_better else y - x)
    d = np.asarray(diffs)
    if len(d) == 0:
        return f"{metric}: n/a"
    better, equal = int((d > 1e-9).sum()), int((np.abs(d) <= 1e-9).sum())
    return (
        f"{metric}: {a} better than {b} by {d.mean():+.3f} on average (positive = better); "
        f"better on {better}, equal on {equal}, worse on {len(d) - better - equal} of {len(d)} videos"
    )


def report_tables(rows: list[dict], variants: Sequence[str]) -> str:
    """Every table of the report, from the rows alone (so a finished run can be re-tabulated)."""
    out = []
    for n in sorted({r["frames"] for r in rows}):
        present = [v for v in variants if any(r["variant"] == v and r["frames"] == n for r in rows)]
        out += [f"### {n} frames", "", table(rows, present, n), ""]
        for m in ("seam_agreement", "seam_jump_ratio", "consistency", "textual"):
            out += [f"{m} per clip (mean over its edits):", "", per_clip(rows, present, m, n), ""]
        for other in ("chunks", "no_anchor"):
            if {"anchored", other} <= set(present):
                for m, hb in (("seam_agreement", True), ("seam_size_jump", False), ("consistency", True)):
                    out.append("- " + paired(rows, "anchored", other, m, n, hb))
                jr = paired_abs_one(rows, "anchored", other, n)
                out += ["- " + jr, ""]
    return "\n".join(out)


def paired_abs_one(rows: list[dict], a: str, b: str, frames: int) -> str:
    """The seam jump ratio is best at 1 (as the source): compare distances from 1."""
    conv = [{**r, "seam_jump_dist": abs(r["seam_jump_ratio"] - 1)} for r in rows]
    return paired(conv, a, b, "seam_jump_dist", frames, higher_better=False)


def contact_sheet(path: Path, cases: list[tuple[str, np.ndarray, dict[str, np.ndarray]]], cuts: int = 8) -> None:
    """Per case one row per variant, every frame in a strip, a red tick at each window boundary."""
    from PIL import Image, ImageDraw

    n_frames = len(cases[0][1])
    cell, left, gap = 32, 190, 4
    rows_per_case = 1 + len(cases[0][2])
    sheet = Image.new("RGB", (left + n_frames * cell, len(cases) * (rows_per_case * cell + gap)), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, src, outs in cases:
        for label, video in [(f"source: {title}"[:30], src), *((VARIANTS[k][0][:30], v) for k, v in outs.items())]:
            draw.text((2, y + 10), label, fill=(255, 255, 255))
            for i, f in enumerate(video):
                img = Image.fromarray((np.clip(f, 0, 1) * 255).round().astype(np.uint8)).resize((cell, cell))
                sheet.paste(img, (left + i * cell, y))
            y += cell
        y += gap
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv: Optional[list[str]] = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL_DIR)
    ap.add_argument("--out", type=Path, default=Path("outputs/long_eval"))
    ap.add_argument(
        "--set",
        choices=("bundled", "test"),
        default="bundled",
        help="bundled: 3 hand-picked clips stretched; test: the long-clip test set (intervals over clips)",
    )
    ap.add_argument("--clips", nargs="*", default=None, help="a subset of the set's clips (e.g. to split a run)")
    ap.add_argument("--frames", type=int, nargs="+", default=[32], help="clip lengths, e.g. 32 64")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--tune-steps", type=int, default=LongConfig.tune_steps)
    ap.add_argument("--steps", type=int, default=LongConfig.steps)
    ap.add_argument("--edits", type=int, default=LongConfig.edits, help="edits per clip (colour, shape, both, ...)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--tables", type=Path, nargs="+", help="only print the report's tables from these rows.json (e.g. two halves)"
    )
    args = ap.parse_args(argv)
    tabulate = interval_tables if args.set == "test" else report_tables
    if args.tables:
        rows = [r for path in args.tables for r in json.loads(path.read_text())]
        print(tabulate(rows, args.variants))
        return rows
    torch.set_num_threads(args.threads)
    from ..checkpoints import load_pipeline

    pipe = load_pipeline(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    cases = []
    t_start = time.time()
    for n in args.frames:
        cfg = LongConfig(frames=n, tune_steps=args.tune_steps, steps=args.steps, edits=args.edits)
        for clip, edits in clips_for(args.set, args.clips, n, args.edits):
            print(f"{clip.name} x {n} frames: {clip.caption}", flush=True)
            outs = edit_long_clip(pipe, clip, edits, cfg, args.variants, log=lambda s: print(s, flush=True))
            rows += evaluate(clip, edits, outs, args.variants, cfg.seed)
            first = edits[0].prompt
            cases.append(
                (f"{clip.name} x{n}: {first}", clip.frames(), {v: outs[v][first].numpy() for v in args.variants})
            )
            (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
        contact_sheet(args.out / f"contact_sheet_{n}.png", [c for c in cases if f" x{n}:" in c[0]])
    meta = {
        "seconds": time.time() - t_start,
        "threads": args.threads,
        "set": args.set,
        "clips": sorted({r["clip"] for r in rows}),
        "config": dataclasses.asdict(cfg),
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    (args.out / "tables.md").write_text(tabulate(rows, args.variants) + "\n")
    print(tabulate(rows, args.variants))
    return rows


if __name__ == "__main__":
    main()
