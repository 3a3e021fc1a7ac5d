"""A seeded generator of evaluation clips and their edits, split into a development and a test set.

Why: 13 hand-picked clips are too few, and chosen by the people who wrote the method, for any
claim to survive new clips. Every clip here is a pure function of its seed (random shapes,
colours, background, paths, speeds, start points, lengths; one or two objects), and so are its
edits. The seed ranges are disjoint and fixed up front:

- :data:`DEV_SEEDS` (1000-1009): the only clips on which settings are chosen;
- :data:`TEST_SEEDS` (2000-2029): used only for the final report, never for a choice;
- :data:`LONG_TEST_SEEDS` (3000-3011): long clips (drawn at the long length) for the report on
  editing in windows (:mod:`tav.shapes.long_eval`), never for a choice either.

A draw whose source frames the analyzer does not read exactly (two objects hiding each other
for a whole frame, say) is redrawn from the same seed's stream, so every metric starts from a
correct reading of the source.
"""

from __future__ import annotations

import functools

import numpy as np

from . import analyzer
from .clips import Edit
from .world import BACKGROUNDS, COLOURS, MAX_OBJECT, MIN_OBJECT, SHAPES, SIZE, Clip, Track, caption_for

DEV_SEEDS: tuple[int, ...] = tuple(range(1000, 1010))
TEST_SEEDS: tuple[int, ...] = tuple(range(2000, 2030))
LONG_TEST_SEEDS: tuple[int, ...] = tuple(range(3000, 3012))
#: clip lengths drawn for the evaluation sets (short: the budget is CPU time)
LENGTHS: tuple[int, ...] = (6, 8)
PATHS: tuple[str, ...] = ("right", "left", "down", "up", "diagonal", "antidiagonal", "arc", "circle", "bounce")
EDIT_KINDS: tuple[str, ...] = ("colour", "shape", "both", "background")
#: edits drawn per clip (distinct kinds)
EDITS_PER_CLIP = 2


@functools.lru_cache(maxsize=256)
def generate_clip(seed: int, lengths: tuple[int, ...] = LENGTHS, max_tries: int = 50) -> Clip:
    """The clip of ``seed``: deterministic, one or two objects, read exactly by the analyzer."""
    rng = np.random.default_rng([seed, 0])
    for _ in range(max_tries):
        clip = _draw(rng, seed, lengths)
        if all(analyzer.frame_matches(r, clip.caption) for r in analyzer.analyze_video(clip.frames())):
            return clip
    raise RuntimeError(f"seed {seed}: no clip the analyzer reads exactly in {max_tries} draws")


def _draw(rng: np.random.Generator, seed: int, lengths: tuple[int, ...]) -> Clip:
    n_objects = int(rng.integers(1, 3))
    colours = rng.choice(list(COLOURS), size=n_objects, replace=False)
    tracks = []
    for i, colour in enumerate(colours):
        size = float(rng.uniform(MIN_OBJECT, MAX_OBJECT))
        half = size / 2 + 1
        # a second object may stand still: occlusion and "one moves, one does not" scenes
        path = str(rng.choice(PATHS + (("still",) if i else ())))
        start = tuple(float(v) for v in rng.uniform(half, SIZE - half, size=2))
        tracks.append(
            Track(
                str(rng.choice(SHAPES)),
                str(colour),
                round(size, 1),
                path,
                round(float(rng.uniform(0.5, 2.0)), 2),
                start,
            )
        )
    background = str(rng.choice(list(BACKGROUNDS)))
    n_frames = int(rng.choice(lengths))
    note = ", ".join(f"{t.path} x{t.speed:g}" for t in tracks)
    return Clip(f"gen{seed}", tuple(tracks), background, n_frames, note=note)


def generated_edits(clip: Clip, seed: int, k: int = EDITS_PER_CLIP) -> list[Edit]:
    """``k`` edits of distinct kinds for the clip of ``seed``, drawn from their own stream.

    Colour/shape edits change one randomly chosen object; a new colour never repeats another
    object's (the caption would be ambiguous); background edits swap the background.
    """
    rng = np.random.default_rng([seed, 1])
    objs = [(t.colour, t.shape) for t in clip.tracks]
    out = []
    for kind in rng.choice(EDIT_KINDS, size=k, replace=False):
        kind = str(kind)
        if kind == "background":
            new_bg = next(b for b in BACKGROUNDS if b != clip.background)
            out.append(Edit(kind, caption_for(objs, new_bg)))
            continue
        i = int(rng.integers(len(objs)))
        colour, shape = objs[i]
        if kind in ("colour", "both"):
            colour = str(rng.choice([c for c in COLOURS if all(c != o[0] for o in objs)]))
        if kind in ("shape", "both"):
            shape = str(rng.choice([s for s in SHAPES if s != shape]))
        edited = list(objs)
        edited[i] = (colour, shape)
        out.append(Edit(kind, caption_for(edited, clip.background)))
    return out


def eval_set(name: str) -> list[tuple[Clip, list[Edit]]]:
    """``"dev"`` or ``"test"``: every clip of the split with its edits."""
    seeds = {"dev": DEV_SEEDS, "test": TEST_SEEDS}
    if name not in seeds:
        raise ValueError(f"unknown evaluation set {name!r}: use 'dev' or 'test'")
    return [(clip, generated_edits(clip, s)) for s in seeds[name] for clip in (generate_clip(s),)]
