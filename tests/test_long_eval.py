"""The long-clip report's seam metric: where the boundaries are, and that it sees a seam."""

import dataclasses

import numpy as np
import pytest

from tav.shapes import analyzer, generated
from tav.shapes.long_eval import (
    INTERVAL_METRICS,
    VARIANTS,
    clips_for,
    interval_tables,
    long_clip,
    seam_metrics,
    seam_pairs,
)
from tav.shapes.world import Track
from tav.windows import Windows


def test_seam_pairs_straddle_each_boundary() -> None:
    assert seam_pairs(Windows(8, 2), 32) == [(5, 8), (11, 14), (17, 20), (23, 26)]
    assert seam_pairs(Windows(8, 0), 32) == [(7, 8), (15, 16), (23, 24)]
    assert seam_pairs(VARIANTS["chunks"][1], 64)[-1] == (55, 56)


def test_seam_metric_sees_a_colour_and_size_jump_and_not_the_source() -> None:
    clip = long_clip("red_circle_right", 16)
    src = clip.frames()
    pairs = seam_pairs(Windows(8, 0), 16)
    clean = seam_metrics(analyzer.analyze_video(src), src, src, pairs)
    assert clean["seam_agreement"] == 1.0 and clean["seam_size_jump"] < 0.5
    assert abs(clean["seam_jump_ratio"] - 1.0) < 1e-6
    # the second chunk shows a bigger blue circle: a seam in colour, size and pixels
    other = dataclasses.replace(clip, tracks=(dataclasses.replace(clip.tracks[0], colour="blue"),)).frames()
    bigger = dataclasses.replace(clip, tracks=(Track("circle", "red", 28, "right"),)).frames()
    colour_seam = np.concatenate([src[:8], other[8:]])
    size_seam = np.concatenate([src[:8], bigger[8:]])
    got = seam_metrics(analyzer.analyze_video(colour_seam), colour_seam, src, pairs)
    assert got["seam_agreement"] == 0.0 and got["seam_jump_ratio"] > 3
    got = seam_metrics(analyzer.analyze_video(size_seam), size_seam, src, pairs)
    assert got["seam_agreement"] == 1.0 and got["seam_size_jump"] > 2


def test_long_test_set_is_drawn_at_the_length_and_disjoint_from_the_other_splits() -> None:
    first = clips_for("test", ["gen3000", "gen3007"], 16, 2)
    assert [c.name for c, _ in first] == ["gen3000", "gen3007"]
    assert all(c.n_frames == 16 and len(e) == 2 for c, e in first)
    again = clips_for("test", ["gen3000", "gen3007"], 16, 2)
    assert [(c, e) for c, e in first] == [(c, e) for c, e in again]  # a pure function of seed and length
    assert not set(generated.LONG_TEST_SEEDS) & set(generated.TEST_SEEDS + generated.DEV_SEEDS)
    with pytest.raises(ValueError, match="gen3012"):
        clips_for("test", ["gen3012"], 16, 2)


def _rows(variant: str, clip: int, jump: float) -> list[dict]:
    base = {"frames": 32, "variant": variant, "seed": 0, "kind": "colour"}
    metrics = dict.fromkeys(INTERVAL_METRICS, 0.5)
    return [
        {**base, **metrics, "clip": f"gen{clip}", "prompt": f"edit {k}", "seam_jump_dist": jump + 0.01 * k}
        for k in range(2)
    ]


def test_interval_tables_judge_claims_by_paired_intervals_over_clips() -> None:
    """Chunks jump more at every clip's cut: holds; the anchor equals no anchor: undecided."""
    rows = []
    for clip in range(6):
        rows += _rows("anchored", clip, 0.2 + 0.05 * clip)
        rows += _rows("chunks", clip, 0.9 + 0.05 * clip)
        rows += _rows("no_anchor", clip, 0.2 + 0.05 * clip + (0.01 if clip % 2 else -0.01))
    text = interval_tables(rows, ["anchored", "no_anchor", "chunks"])
    assert "### 32 frames: 6 clips, 12 edited videos per variant" in text
    line = next(x for x in text.splitlines() if x.startswith("| windows jump less at a boundary than chunks"))
    assert "**holds**" in line and "-0.70 [-0.70, -0.70]" in line
    line = next(x for x in text.splitlines() if x.startswith("| the frame-0 anchor lowers the jump"))
    assert "**undecided**" in line
    assert "per-frame editing" not in text  # claims need both variants
