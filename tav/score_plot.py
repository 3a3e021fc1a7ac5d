"""A small plot of an edit's per-frame scores, drawn with Pillow (no plotting dependency).

Top: each frame's alignment with the edit prompt; bottom: the consistency of each consecutive frame
pair. The edit in orange, the source (when scored) in blue: a dip shows where an edit flickers or
loses the prompt, and the gap to the source shows what the edit changed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .metrics import EditScores

EDIT, SOURCE, GRID, TEXT = (230, 120, 20), (40, 90, 200), (215, 215, 215), (30, 30, 30)
WIDTH, PANEL, MARGIN_L, MARGIN_R, TOP = 560, 150, 52, 14, 22


def _panel(draw: ImageDraw.ImageDraw, y0: int, title: str, series: list[tuple[list[float], tuple]]) -> None:
    """One panel: title, y range from the data (padded), three grid lines with labels, a polyline per series."""
    font = ImageFont.load_default()
    values = [v for s, _ in series for v in s]
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.1, 1e-3)
    lo, hi = lo - pad, hi + pad
    x0, x1, top, bottom = MARGIN_L, WIDTH - MARGIN_R, y0 + TOP, y0 + PANEL - 18
    draw.text((x0, y0 + 4), title, fill=TEXT, font=font)
    for k in range(3):
        v = lo + (hi - lo) * k / 2
        y = bottom - (bottom - top) * k / 2
        draw.line([(x0, y), (x1, y)], fill=GRID)
        draw.text((4, y - 6), f"{v:.3f}", fill=TEXT, font=font)
    n = max(len(s) for s, _ in series)
    draw.text((x0, bottom + 3), "0", fill=TEXT, font=font)
    draw.text((x1 - 20, bottom + 3), str(n - 1), fill=TEXT, font=font)
    for s, colour in series:
        pts = [
            (x0 + (x1 - x0) * (i / max(n - 1, 1)), bottom - (bottom - top) * (v - lo) / (hi - lo))
            for i, v in enumerate(s)
        ]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)


def plot(scores: EditScores) -> np.ndarray:
    """``[H, W, 3]`` uint8: per-frame alignment and consecutive-frame consistency, edit vs source."""
    legend = 18
    img = Image.new("RGB", (WIDTH, 2 * PANEL + legend), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    align = [(scores.edit.alignment_per_frame, EDIT)]
    cons = [(scores.edit.consistency_per_step, EDIT)]
    if scores.source is not None:
        align.append((scores.source.alignment_per_frame, SOURCE))
        cons.append((scores.source.consistency_per_step, SOURCE))
    _panel(draw, 0, f"alignment with the prompt per frame (mean {scores.edit.text_alignment:.4f})", align)
    _panel(
        draw,
        PANEL,
        f"consistency of frames i, i+1 (mean {scores.edit.frame_consistency_consecutive:.4f})",
        cons,
    )
    y = 2 * PANEL + 3
    draw.rectangle([MARGIN_L, y + 3, MARGIN_L + 14, y + 9], fill=EDIT)
    draw.text((MARGIN_L + 20, y), "edit", fill=TEXT, font=font)
    if scores.source is not None:
        draw.rectangle([MARGIN_L + 70, y + 3, MARGIN_L + 84, y + 9], fill=SOURCE)
        draw.text((MARGIN_L + 90, y), "source", fill=TEXT, font=font)
    return np.asarray(img, dtype=np.uint8)
