"""Shapes world + analyzer on rendered ground truth: the analyzer must be exact on clean renders."""

from __future__ import annotations

import numpy as np
import pytest

from tav.shapes import analyzer as A
from tav.shapes import world
from tav.shapes.clips import EVAL_CLIPS, edits_for


def test_every_single_object_combination_is_read_exactly():
    rng = np.random.default_rng(0)
    for bg in world.BACKGROUNDS:
        for colour in world.COLOURS:
            for shape in world.SHAPES:
                for size in (world.MIN_OBJECT, world.MAX_OBJECT):
                    cx, cy = rng.uniform(size / 2 + 1, world.SIZE - size / 2 - 1, size=2)
                    scene = world.Scene((world.Obj(shape, colour, float(cx), float(cy), float(size)),), bg)
                    r = A.analyze_frame(world.render(scene))
                    assert A.frame_matches(r, scene.caption), (scene, r)
                    o = r.objects[0]
                    assert np.hypot(o.x - cx, o.y - cy) < 1.0
                    assert abs(o.size - size) < 3.0


def test_random_scenes_one_and_two_objects_100_percent():
    rng = np.random.default_rng(1)
    scenes = [world.random_scene(rng, 1 + (i % 2)) for i in range(120)]
    hits = [A.frame_matches(A.analyze_frame(world.render(s)), s.caption) for s in scenes]
    assert np.mean(hits) == 1.0


@pytest.mark.parametrize("clip", EVAL_CLIPS, ids=lambda c: c.name)
def test_eval_clips_read_exactly(clip):
    frames = clip.frames()
    assert frames.shape == (clip.n_frames, 64, 64, 3) and 8 <= clip.n_frames <= 16
    readings = A.analyze_video(frames)
    assert A.textual_faithfulness(readings, clip.caption) == 1.0
    assert A.majority_agreement(readings) == 1.0
    dist, found = A.motion_fidelity(readings, readings, clip.caption, clip.caption)
    assert dist == 0.0 and found == 1.0
    for scene, r in zip(clip.scenes(), readings, strict=False):  # positions match the geometry, occluded or not
        for obj in scene.objects:
            got = r.find(obj.colour)
            assert got is not None and np.hypot(got.x - obj.cx, got.y - obj.cy) < 1.0
    for edit in edits_for(clip):
        world.parse_caption(edit.prompt)  # every edit stays inside the grammar
        assert edit.prompt != clip.caption


def test_uint8_and_torch_inputs_agree():
    import torch

    img = world.render(world.Scene((world.Obj("triangle", "yellow", 30, 33, 24),), "white"))
    a = A.analyze_frame(img)
    assert A.analyze_frame(np.round(img * 255).astype(np.uint8)).signature == a.signature
    assert A.analyze_frame(torch.from_numpy(img)).signature == a.signature


def test_metrics_detect_wrong_content_and_motion():
    clip = EVAL_CLIPS[0]  # red circle moving right
    src = clip.frames()
    # the "edit" shows a green square standing still: wrong text, lost motion
    still = world.Clip("x", (world.Track("square", "green", 24, "still"),), clip.background, clip.n_frames).frames()
    m = A.video_metrics(still, src, clip.caption, "a green circle on a white background")
    assert m["textual"] == 0.0 and m["motion_px"] > 5.0
    assert m["consistency"] == 1.0 and m["change_ratio"] == 0.0
    # flicker: alternate two colours -> consistency 0.5 and more change than the source
    flicker = src.copy()
    flicker[1::2] = world.Clip(
        "y", (world.Track("circle", "blue", 24, "right"),), clip.background, clip.n_frames
    ).frames()[1::2]
    m = A.video_metrics(flicker, src, clip.caption, clip.caption)
    assert m["consistency"] == 0.5 and m["change_ratio"] > 1.0


def test_blank_and_noise_frames_have_no_shapes():
    blank = np.ones((64, 64, 3), np.float32)
    assert A.analyze_frame(blank).objects == ()
    noise = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    r = A.analyze_frame(noise)
    assert not A.frame_matches(r, "a red circle on a white background")


def test_caption_grammar_round_trip_and_errors():
    objs = [("red", "circle"), ("blue", "square")]
    cap = world.caption_for(objs, "black")
    assert cap == "a red circle and a blue square on a black background"
    assert world.parse_caption(cap) == (objs, "black")
    with pytest.raises(ValueError):
        world.parse_caption("a purple circle on a white background")
    with pytest.raises(ValueError):
        world.parse_caption("a man is skiing")


def test_trajectories_stay_inside_and_move():
    for kind in ("right", "left", "down", "up", "diagonal", "antidiagonal", "arc", "circle", "bounce"):
        pts = world.trajectory(kind, 12, 24, speed=2.0)
        xs, ys = zip(*pts, strict=False)
        assert min(xs) >= 13 - 1e-6 and max(xs) <= 51 + 1e-6 and min(ys) >= 13 - 1e-6 and max(ys) <= 51 + 1e-6
        assert max(np.hypot(np.diff(xs), np.diff(ys))) > 1.0
