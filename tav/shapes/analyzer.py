"""A deterministic reader of shapes-world frames, and the paper's metrics computed from it.

Why: the paper scores edits with CLIP; here a fixed, hand-written analyzer plays that role so
every number is reproducible and explainable. It has no learned parts and no knobs tuned on model
outputs: the thresholds below were fixed on clean renders (where it is 100% right) before any
model was evaluated.

Per frame: background = median of the border pixels; every pixel is un-mixed against each palette
colour (``p = bg + alpha * (colour - bg)``) and labelled with the colour whose line explains it
best; a colour with enough pixels (``alpha > 0.5``) is an object. Its shape is the template
(circle / square / triangle at any position and size) with the best overlap with its mask, pixels
of other objects counting as unknown (so partly occluded shapes are still read); its position is
the centre of that fitted box, which does not move when an edit changes the shape.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .world import BACKGROUNDS, COLOURS, SHAPES, parse_caption, shape_mask

#: a colour needs this many pixels (and this share of the largest object) to count as an object
MIN_PIXELS = 40
MIN_SHARE = 0.25
#: best template IoU below this reads as shape "unknown" (a blob that is no shape)
MIN_SHAPE_IOU = 0.55
#: a pixel belongs to the foreground when its un-mixing alpha exceeds this
ALPHA_FG = 0.5


@dataclasses.dataclass(frozen=True)
class ObjectReading:
    colour: str
    shape: str
    #: centre of the fitted shape's bounding box (px)
    x: float
    y: float
    #: fitted box side (px)
    size: float
    #: IoU of the fitted template with the mask
    fit: float
    pixels: int


@dataclasses.dataclass(frozen=True)
class FrameReading:
    background: str
    objects: tuple[ObjectReading, ...]  # largest first

    @property
    def signature(self) -> tuple:
        """What the frame shows, for majority votes: background + sorted (colour, shape) pairs."""
        return (self.background, tuple(sorted((o.colour, o.shape) for o in self.objects)))

    def find(self, colour: str) -> Optional[ObjectReading]:
        return next((o for o in self.objects if o.colour == colour), None)


_PALETTE = np.asarray([COLOURS[c] for c in COLOURS], dtype=np.float32)
_PALETTE_NAMES = list(COLOURS)
_BG = {k: np.asarray(v, dtype=np.float32) for k, v in BACKGROUNDS.items()}


def _to_numpy(frame) -> np.ndarray:
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().float().numpy()
    a = np.asarray(frame, dtype=np.float32)
    if a.ndim != 3 or a.shape[-1] < 3:
        raise ValueError(f"expected a frame [H, W, 3], got shape {a.shape}")
    if a.max() > 1.5:  # uint8 input
        a = a / 255.0
    return a[..., :3]


def analyze_frame(frame) -> FrameReading:
    """Read one ``[H, W, 3]`` frame (0..1 floats, or uint8)."""
    img = _to_numpy(frame)
    h, w, _ = img.shape
    border = np.concatenate(
        [img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3), img[:, :2].reshape(-1, 3), img[:, -2:].reshape(-1, 3)]
    )
    bg_ref = np.median(border, axis=0)
    bg_name = min(_BG, key=lambda k: float(np.sum((_BG[k] - bg_ref) ** 2)))

    # un-mix every pixel against every palette colour, with the measured background as the other end
    d = img.reshape(-1, 1, 3) - bg_ref  # [P,1,3]
    dirs = _PALETTE - bg_ref  # [K,3]
    alpha = np.clip((d * dirs).sum(-1) / np.maximum((dirs * dirs).sum(-1), 1e-6), 0.0, 1.0)  # [P,K]
    resid = np.sum((d - alpha[..., None] * dirs) ** 2, axis=-1)  # [P,K]
    # a pixel that is background-like under every colour has small alpha everywhere
    best = np.argmin(resid - 1e-3 * alpha, axis=1)
    best_alpha = alpha[np.arange(alpha.shape[0]), best]
    fg = best_alpha > ALPHA_FG
    labels = np.where(fg, best, -1).reshape(h, w)

    counts = {k: int((labels == k).sum()) for k in range(len(_PALETTE_NAMES))}
    largest = max(counts.values()) if counts else 0
    keep = [k for k, n in counts.items() if n >= MIN_PIXELS and n >= MIN_SHARE * largest]
    objects = []
    for k in keep:
        mask = labels == k
        care = ~((labels >= 0) & ~mask)  # other objects' pixels are unknown (occlusion)
        shape, x, y, size, fit = fit_shape(mask, care)
        objects.append(ObjectReading(_PALETTE_NAMES[k], shape, x, y, size, fit, counts[k]))
    objects.sort(key=lambda o: -o.pixels)
    return FrameReading(bg_name, tuple(objects))


def analyze_video(frames) -> list[FrameReading]:
    """Read every frame of ``[F, H, W, 3]``."""
    return [analyze_frame(f) for f in frames]


# ------------------------------------------------------------------------------ template fit

_GRID: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    if (h, w) not in _GRID:
        _GRID[(h, w)] = (
            np.arange(w, dtype=np.float32)[None, None, :] + 0.5,
            np.arange(h, dtype=np.float32)[None, :, None] + 0.5,
        )
    return _GRID[(h, w)]


def _ious(shape: str, params: np.ndarray, mask: np.ndarray, care: np.ndarray) -> np.ndarray:
    xs, ys = _grid(*mask.shape)
    cx, cy, sz = (params[:, i, None, None] for i in range(3))
    tmpl = shape_mask(shape, cx, cy, sz, xs, ys) & care  # [N,H,W]
    m = mask & care
    inter = (tmpl & m).sum(axis=(1, 2))
    union = (tmpl | m).sum(axis=(1, 2))
    return inter / np.maximum(union, 1)


def fit_shape(mask: np.ndarray, care: Optional[np.ndarray] = None) -> tuple[str, float, float, float, float]:
    """Best (shape, x, y, size, IoU) of a template for a boolean mask; coarse grid, then refine."""
    if care is None:
        care = np.ones_like(mask)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return "unknown", float("nan"), float("nan"), 0.0, 0.0
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    cx0, cy0 = (x0 + x1) / 2, (y0 + y1) / 2
    s0 = float(max(x1 - x0, y1 - y0))
    best: tuple[float, str, np.ndarray] = (-1.0, "unknown", np.zeros(3))
    for shape in SHAPES:
        d = np.arange(-4, 5, 2, dtype=np.float32)
        ds = np.arange(-6, 7, 2, dtype=np.float32)
        p = np.stack(np.meshgrid(cx0 + d, cy0 + d, s0 + ds, indexing="ij"), -1).reshape(-1, 3)
        p = p[p[:, 2] > 2]
        iou = _ious(shape, p, mask, care)
        c = p[int(np.argmax(iou))]
        f = np.arange(-1, 1.01, 0.5, dtype=np.float32)
        p = np.stack(np.meshgrid(c[0] + f, c[1] + f, c[2] + f, indexing="ij"), -1).reshape(-1, 3)
        iou = _ious(shape, p, mask, care)
        i = int(np.argmax(iou))
        if iou[i] > best[0] + 1e-9:
            best = (float(iou[i]), shape, p[i])
    fit, shape, p = best
    if fit < MIN_SHAPE_IOU:
        shape = "unknown"
    return shape, float(p[0]), float(p[1]), float(p[2]), fit


# ----------------------------------------------------------------------------------- metrics


def frame_matches(reading: FrameReading, target_caption: str) -> bool:
    """True when the frame shows exactly the prompt's objects (colour + shape) on its background."""
    objects, bg = parse_caption(target_caption)
    return reading.background == bg and sorted((o.colour, o.shape) for o in reading.objects) == sorted(objects)


def textual_faithfulness(readings: Sequence[FrameReading], target_caption: str) -> float:
    """Fraction of frames whose colours, shapes and background match the target prompt."""
    return float(np.mean([frame_matches(r, target_caption) for r in readings]))


def colour_shape_accuracy(readings: Sequence[FrameReading], target_caption: str) -> dict[str, float]:
    """Separate colour / shape / both rates for single-object prompts (largest object judged)."""
    objects, _ = parse_caption(target_caption)
    colour, shape = objects[0]
    col = [bool(r.objects) and r.objects[0].colour == colour for r in readings]
    shp = [bool(r.objects) and r.objects[0].shape == shape for r in readings]
    return {
        "colour": float(np.mean(col)),
        "shape": float(np.mean(shp)),
        "both": float(np.mean([a and b for a, b in zip(col, shp, strict=False)])),
    }


def _pair(reading: FrameReading, colour: str, taken: set) -> Optional[ObjectReading]:
    obj = reading.find(colour)
    if obj is not None and obj.colour not in taken:
        return obj
    return next((o for o in reading.objects if o.colour not in taken), None)


def motion_fidelity(
    out: Sequence[FrameReading], src: Sequence[FrameReading], src_caption: str, target_caption: str
) -> tuple[float, float]:
    """Mean distance (px) between each object's position in output and source, frame by frame.

    Objects are paired through the prompts: the i-th object of the source caption is the i-th of
    the edited one (found by its colour; if the edit's colour is missing, the largest unpaired
    object stands in). Returns ``(mean distance, fraction of object-frames found)``.
    """
    s_objs, _ = parse_caption(src_caption)
    t_objs, _ = parse_caption(target_caption)
    dists, total = [], 0
    for ro, rs in zip(out, src, strict=False):
        taken: set = set()
        for (sc, _), (tc, _) in zip(s_objs, t_objs, strict=False):
            total += 1
            so = rs.find(sc)
            oo = _pair(ro, tc, taken)
            if so is None or oo is None:
                continue
            taken.add(oo.colour)
            dists.append(float(np.hypot(oo.x - so.x, oo.y - so.y)))
    if not dists:
        return float("nan"), 0.0
    return float(np.mean(dists)), len(dists) / max(total, 1)


def majority_agreement(readings: Sequence[FrameReading]) -> float:
    """Fraction of frames that show the video's most common background + colours + shapes."""
    sigs = [r.signature for r in readings]
    return Counter(sigs).most_common(1)[0][1] / len(sigs)


def size_spread(readings: Sequence[FrameReading]) -> float:
    """Mean over colours of the std of the fitted size across frames (px): shapes that grow/shrink."""
    by_colour: dict[str, list[float]] = {}
    for r in readings:
        for o in r.objects:
            by_colour.setdefault(o.colour, []).append(o.size)
    spreads = [float(np.std(v)) for v in by_colour.values() if len(v) > 1]
    return float(np.mean(spreads)) if spreads else 0.0


def mean_frame_change(frames) -> float:
    """Mean absolute pixel change between consecutive frames (0..1 scale)."""
    a = np.stack([_to_numpy(f) for f in frames])
    if len(a) < 2:
        return 0.0
    return float(np.abs(np.diff(a, axis=0)).mean())


def change_ratio(out_frames, src_frames) -> float:
    """Output's mean frame-to-frame change over the source's: ~1 is as smooth as the source, >1 flickers."""
    return mean_frame_change(out_frames) / max(mean_frame_change(src_frames), 1e-6)


def video_metrics(
    out_frames, src_frames, src_caption: str, target_caption: str, src_readings: Optional[Sequence[FrameReading]] = None
) -> dict[str, float]:
    """All metrics for one edited video against its source clip."""
    out_r = analyze_video(out_frames)
    src_r = list(src_readings) if src_readings is not None else analyze_video(src_frames)
    dist, found = motion_fidelity(out_r, src_r, src_caption, target_caption)
    return {
        "textual": textual_faithfulness(out_r, target_caption),
        "motion_px": dist,
        "found": found,
        "consistency": majority_agreement(out_r),
        "change_ratio": change_ratio(out_frames, src_frames),
        "size_spread": size_spread(out_r),
    }
