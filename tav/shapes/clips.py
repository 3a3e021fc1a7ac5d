"""The bundled evaluation clips and their edited prompts (the paper's evaluation at toy scale).

Why these: in so simple a world, per-frame editing after DDIM inversion already keeps position
and colour, so the set is built to give Tune-A-Video's claims room to show: shape edits, two
objects (binding colour to the right shape), occlusion, fast and non-linear motion.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from .world import COLOURS, SHAPES, Clip, Track, caption_for

EVAL_CLIPS: tuple[Clip, ...] = (
    Clip("red_circle_right", (Track("circle", "red", 24, "right"),), "white", note="straight line"),
    Clip("blue_square_down", (Track("square", "blue", 22, "down"),), "black", note="straight line"),
    Clip("green_triangle_diagonal", (Track("triangle", "green", 26, "diagonal"),), "white", note="diagonal"),
    Clip("yellow_circle_arc", (Track("circle", "yellow", 22, "arc"),), "black", note="circular arc"),
    Clip(
        "red_square_bounce_fast",
        (Track("square", "red", 22, "bounce", speed=2.0),),
        "white",
        note="fast, bounces off a wall",
    ),
    Clip("blue_triangle_left", (Track("triangle", "blue", 24, "left"),), "white", n_frames=12, note="12 frames"),
    Clip(
        "green_circle_loop_fast", (Track("circle", "green", 22, "circle"),), "black", note="full loop: fast, non-linear"
    ),
    Clip(
        "yellow_square_up", (Track("square", "yellow", 26, "up"),), "white", n_frames=12, note="12 frames, low contrast"
    ),
    Clip(
        "red_triangle_loop",
        (Track("triangle", "red", 24, "circle", speed=1.0),),
        "white",
        n_frames=12,
        note="loop, 12 frames",
    ),
    Clip(
        "two_crossing",
        (
            Track("circle", "red", 22, "right", start=(12.0, 26.0)),
            Track("square", "blue", 22, "left", start=(52.0, 40.0)),
        ),
        "white",
        note="two objects cross: occlusion in the middle",
    ),
    Clip(
        "two_still_and_moving",
        (
            Track("triangle", "green", 24, "still", start=(16.0, 18.0)),
            Track("circle", "yellow", 22, "down", start=(45.0, 12.0)),
        ),
        "black",
        note="one object still, one moving",
    ),
    Clip(
        "two_occlusion",
        (Track("square", "red", 24, "still"), Track("circle", "blue", 22, "right", start=(12.0, 38.0))),
        "white",
        note="a circle passes in front of a still square",
    ),
    Clip(
        "two_fast_opposite",
        (
            Track("triangle", "yellow", 22, "right", speed=2.0, start=(12.0, 16.0)),
            Track("square", "green", 22, "left", speed=2.0, start=(52.0, 46.0)),
        ),
        "black",
        note="two fast objects moving opposite ways, bouncing",
    ),
)

#: clips whose background change is also evaluated
BACKGROUND_EDITS = ("red_circle_right", "yellow_circle_arc", "two_crossing")


@dataclasses.dataclass(frozen=True)
class Edit:
    kind: str  # colour | shape | both | background
    prompt: str


def _next(options: tuple[str, ...] | list[str], current: str, avoid: set[str]) -> str:
    i = list(options).index(current)
    for k in range(1, len(options)):
        cand = list(options)[(i + k) % len(options)]
        if cand not in avoid:
            return cand
    raise ValueError(f"no alternative to {current!r}")


def edits_for(clip: Clip) -> list[Edit]:
    """Colour change, shape change, both (of the first object), and background where listed."""
    objs = [(t.colour, t.shape) for t in clip.tracks]
    c0, s0 = objs[0]
    others = {c for c, _ in objs[1:]}
    new_c = _next(list(COLOURS), c0, others)
    new_s = _next(SHAPES, s0, set())
    out = [
        Edit("colour", caption_for([(new_c, s0)] + objs[1:], clip.background)),
        Edit("shape", caption_for([(c0, new_s)] + objs[1:], clip.background)),
        Edit("both", caption_for([(new_c, new_s)] + objs[1:], clip.background)),
    ]
    if clip.name in BACKGROUND_EDITS:
        bg = "black" if clip.background == "white" else "white"
        out.append(Edit("background", caption_for(objs, bg)))
    return out


def get_clip(name: str) -> Clip:
    for c in EVAL_CLIPS:
        if c.name == name:
            return c
    raise KeyError(f"no clip {name!r}; known: {', '.join(c.name for c in EVAL_CLIPS)}")


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m tav.shapes.clips OUT.mp4 [--clip NAME]``: write a bundled clip as a video file,
    e.g. into ComfyUI's input folder for the shapes workflow."""
    import argparse

    import torch

    from ..video_io import write_video

    ap = argparse.ArgumentParser(description=main.__doc__.split(",")[0])
    ap.add_argument("out", help="output .mp4/.gif/.webp")
    ap.add_argument("--clip", default="red_circle_right", choices=[c.name for c in EVAL_CLIPS])
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--frames", type=int, default=None, help="clip length (default: the clip's own)")
    args = ap.parse_args(argv)
    clip = get_clip(args.clip)
    if args.frames:
        clip = dataclasses.replace(clip, n_frames=args.frames)
    print(write_video(args.out, torch.from_numpy(clip.frames()), args.fps), f"({clip.caption!r})")


if __name__ == "__main__":
    main()
