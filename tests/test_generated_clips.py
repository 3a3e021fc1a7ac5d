"""The generated evaluation set: deterministic per seed, a disjoint dev/test split, valid clips and edits."""

import numpy as np
import pytest

from tav.shapes import analyzer, generated
from tav.shapes.world import parse_caption


def test_same_seed_same_clip_and_edits() -> None:
    a, b = generated.generate_clip(2003), generated.generate_clip(2003)
    assert a == b and np.array_equal(a.frames(), b.frames())
    assert generated.generated_edits(a, 2003) == generated.generated_edits(b, 2003)
    assert generated.generate_clip(2004) != a


def test_split_is_disjoint_and_large_enough() -> None:
    assert not set(generated.DEV_SEEDS) & set(generated.TEST_SEEDS)
    assert len(generated.TEST_SEEDS) >= 30 and len(generated.DEV_SEEDS) >= 8
    names = [c.name for c, _ in generated.eval_set("dev")] + [c.name for c, _ in generated.eval_set("test")]
    assert len(set(names)) == len(names)
    with pytest.raises(ValueError, match="'dev' or 'test'"):
        generated.eval_set("train")


def test_test_set_varies_what_the_issue_asks_for() -> None:
    clips = [c for c, _ in generated.eval_set("test")]
    tracks = [t for c in clips for t in c.tracks]
    assert {len(c.tracks) for c in clips} == {1, 2}
    assert {c.n_frames for c in clips} == set(generated.LENGTHS)
    assert {c.background for c in clips} == {"white", "black"}
    assert {t.shape for t in tracks} == {"circle", "square", "triangle"}
    assert len({t.colour for t in tracks}) == 4 and len({t.path for t in tracks}) >= 7
    assert len({t.speed for t in tracks}) > 20 and len({t.start for t in tracks}) == len(tracks)


@pytest.mark.parametrize("seed", generated.DEV_SEEDS[:3] + generated.TEST_SEEDS[:3])
def test_clip_is_read_exactly_and_edits_are_valid(seed: int) -> None:
    clip = generated.generate_clip(seed)
    assert all(analyzer.frame_matches(r, clip.caption) for r in analyzer.analyze_video(clip.frames()))
    edits = generated.generated_edits(clip, seed)
    assert len(edits) == generated.EDITS_PER_CLIP and len({e.kind for e in edits}) == len(edits)
    for e in edits:
        objects, bg = parse_caption(e.prompt)
        assert e.prompt != clip.caption and len(objects) == len(clip.tracks)
        assert len({c for c, _ in objects}) == len(objects)  # colours stay distinct: the caption is unambiguous
        assert (bg != clip.background) == (e.kind == "background")
