"""The long-clip report's seam metric: where the boundaries are, and that it sees a seam."""

import dataclasses

import numpy as np

from tav.shapes import analyzer
from tav.shapes.long_eval import VARIANTS, long_clip, seam_metrics, seam_pairs
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
