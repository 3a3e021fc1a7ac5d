"""A procedural world of coloured shapes: images, captions and moving-object clips.

Why: no real Stable Diffusion weights are reachable here, so the project trains its own tiny
text-to-image model on this world (see :mod:`tav.shapes.train`) and checks Tune-A-Video's claims
with a deterministic analyzer (:mod:`tav.shapes.analyzer`). Everything here is exact geometry,
anti-aliased by supersampling, so ground truth is known for every pixel.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

SIZE = 64
#: supersampling factor per axis for anti-aliased edges
SUPERSAMPLE = 4

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.10, 0.70, 0.20),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.97, 0.85, 0.10),
}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: bounding-box side lengths (px) used for training images and clips
MIN_OBJECT, MAX_OBJECT = 20, 28


@dataclasses.dataclass(frozen=True)
class Obj:
    """One shape: its class, colour, bounding-box centre (px, x right / y down) and box side (px)."""

    shape: str
    colour: str
    cx: float
    cy: float
    size: float


@dataclasses.dataclass(frozen=True)
class Scene:
    """Objects drawn back to front on a plain background."""

    objects: tuple[Obj, ...]
    background: str = "white"

    @property
    def caption(self) -> str:
        return caption_for([(o.colour, o.shape) for o in self.objects], self.background)


# ----------------------------------------------------------------------------------- geometry


def shape_mask(
    shape: str, cx: np.ndarray, cy: np.ndarray, size: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> np.ndarray:
    """Inside-test of ``shape`` for (broadcastable) parameters at points ``xs``/``ys`` (pixel units).

    Shared by the renderer and by the analyzer's template fit, so both agree on what a shape is.
    """
    dx = xs - cx
    dy = ys - cy
    half = size / 2.0
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # apex up, base at the bottom of the box
        return (dy <= half) & (np.abs(dx) <= (dy + half) / 2.0)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


_SS_COORDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _ss_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _SS_COORDS:
        n = size * SUPERSAMPLE
        c = (np.arange(n, dtype=np.float32) + 0.5) / SUPERSAMPLE
        _SS_COORDS[size] = (c[None, :], c[:, None])
    return _SS_COORDS[size]


def coverage(obj: Obj, size: int = SIZE) -> np.ndarray:
    """Fraction of each pixel covered by ``obj`` (``[size, size]`` float32), by supersampling."""
    xs, ys = _ss_grid(size)
    m = shape_mask(obj.shape, np.float32(obj.cx), np.float32(obj.cy), np.float32(obj.size), xs, ys)
    return m.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32)


def render(scene: Scene, size: int = SIZE) -> np.ndarray:
    """Scene -> ``[size, size, 3]`` float32 RGB in 0..1 (later objects drawn in front)."""
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        a = coverage(obj, size)[..., None]
        img = img * (1.0 - a) + np.asarray(COLOURS[obj.colour], dtype=np.float32) * a
    return img


# ----------------------------------------------------------------------------------- captions


def caption_for(objects: Sequence[tuple[str, str]], background: str) -> str:
    """Fixed grammar: "a red circle on a white background", "a red circle and a blue square on ..."."""
    if not objects:
        return f"a plain {background} background"
    things = " and ".join(f"a {c} {s}" for c, s in objects)
    return f"{things} on a {background} background"


_CAPTION_RE = re.compile(r"^(?P<things>.+) on a (?P<bg>\w+) background$")
_THING_RE = re.compile(r"^an? (?P<colour>\w+) (?P<shape>\w+)$")


def parse_caption(text: str) -> tuple[list[tuple[str, str]], str]:
    """Inverse of :func:`caption_for`: ``([(colour, shape), ...], background)``; ValueError if off-grammar."""
    text = text.strip().lower()
    m = re.match(r"^a plain (\w+) background$", text)
    if m and m.group(1) in BACKGROUNDS:
        return [], m.group(1)
    m = _CAPTION_RE.match(text)
    if not m or m.group("bg") not in BACKGROUNDS:
        raise ValueError(f"caption {text!r} is not in the shapes grammar ('a red circle on a white background')")
    objects = []
    for part in m.group("things").split(" and "):
        t = _THING_RE.match(part.strip())
        if not t or t.group("colour") not in COLOURS or t.group("shape") not in SHAPES:
            raise ValueError(f"{part!r} in caption {text!r} is not '<a colour> <shape>'")
        objects.append((t.group("colour"), t.group("shape")))
    return objects, m.group("bg")


# ------------------------------------------------------------------------------- random scenes


def random_scene(rng: np.random.Generator, n_objects: int = 1) -> Scene:
    """A random training scene: distinct colours, objects fully inside the frame."""
    bg = str(rng.choice(list(BACKGROUNDS)))
    colours = rng.choice(list(COLOURS), size=n_objects, replace=False)
    objs: list[Obj] = []
    for colour in colours:
        shape = str(rng.choice(SHAPES))
        size = float(rng.uniform(MIN_OBJECT, MAX_OBJECT))
        half = size / 2 + 1
        for _ in range(100):  # keep objects apart so every caption stays true (mostly visible)
            cx, cy = (float(v) for v in rng.uniform(half, SIZE - half, size=2))
            if all(math.hypot(cx - o.cx, cy - o.cy) >= 0.75 * (size + o.size) / 2 for o in objs):
                break
        objs.append(Obj(shape, str(colour), cx, cy, size))
    return Scene(tuple(objs), bg)


# ------------------------------------------------------------------------------------- motion


def trajectory(
    kind: str, n_frames: int, size: float, *, speed: float = 1.0, start: tuple[float, float] | None = None
) -> list[tuple[float, float]]:
    """Centres along a named path, kept inside the frame for an object of box side ``size``.

    Kinds: right, left, down, up, diagonal, antidiagonal (straight lines), arc (circular arc),
    circle (a full loop: fast, non-linear), bounce (back and forth off the walls), still.
    ``speed`` scales the distance covered; motion beyond a wall is reflected back (a bounce).
    """
    lo, hi = size / 2 + 1, SIZE - size / 2 - 1
    span = hi - lo
    mid = (lo + hi) / 2
    t = np.linspace(0.0, 1.0, n_frames)
    if kind == "still":
        x0, y0 = start or (mid, mid)
        return [(float(x0), float(y0))] * n_frames
    if kind in ("arc", "circle"):
        # arc: half a circle over the top, left to right; circle: a full loop (fast, non-linear)
        radius = min(span / 2, 14.0)
        sweep = (math.pi if kind == "arc" else 2 * math.pi) * speed
        ang = math.pi + sweep * t
        cx, cy = start or (mid, mid + (radius / 2 if kind == "arc" else 0.0))
        xs = cx + radius * np.cos(ang)
        ys = cy + radius * np.sin(ang)
        return [(_reflect(float(x), lo, hi), _reflect(float(y), lo, hi)) for x, y in zip(xs, ys, strict=False)]
    directions = {
        "right": (1, 0),
        "left": (-1, 0),
        "down": (0, 1),
        "up": (0, -1),
        "diagonal": (1, 1),
        "antidiagonal": (1, -1),
        "bounce": (1, 0.35),
    }
    if kind not in directions:
        raise ValueError(f"unknown trajectory {kind!r}; known: still, arc, circle, {', '.join(directions)}")
    ux, uy = directions[kind]
    dist = span * speed
    x0, y0 = start or (lo if ux > 0 else hi if ux < 0 else mid, lo if uy > 0 else hi if uy < 0 else mid)
    return [(_reflect(x0 + ux * dist * s, lo, hi), _reflect(y0 + uy * dist * s, lo, hi)) for s in t]


def _reflect(v: float, lo: float, hi: float) -> float:
    """Fold ``v`` back into ``[lo, hi]`` as a ball bouncing between two walls."""
    span = hi - lo
    u = (v - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


@dataclasses.dataclass(frozen=True)
class Track:
    """One object's appearance and path through a clip."""

    shape: str
    colour: str
    size: float
    path: str
    speed: float = 1.0
    start: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class Clip:
    """A moving-object video: tracks drawn back to front, fixed background, ``n_frames`` frames."""

    name: str
    tracks: tuple[Track, ...]
    background: str = "white"
    n_frames: int = 8
    note: str = ""

    @property
    def caption(self) -> str:
        return caption_for([(t.colour, t.shape) for t in self.tracks], self.background)

    def scenes(self) -> list[Scene]:
        paths = [trajectory(t.path, self.n_frames, t.size, speed=t.speed, start=t.start) for t in self.tracks]
        return [
            Scene(
                tuple(
                    Obj(t.shape, t.colour, p[i][0], p[i][1], t.size) for t, p in zip(self.tracks, paths, strict=True)
                ),  # noqa: E501
                self.background,
            )
            for i in range(self.n_frames)
        ]

    def frames(self) -> np.ndarray:
        """``[F, 64, 64, 3]`` float32 in 0..1 (the IMAGE layout tav uses)."""
        return np.stack([render(s) for s in self.scenes()])


def clip_from_caption(caption: str, paths: Iterable[str] = ("right",), n_frames: int = 8, size: float = 24.0) -> Clip:
    """A clip for any grammar caption, one path per object (handy for tests and the CLI)."""
    objects, bg = parse_caption(caption)
    paths = list(paths)
    tracks = tuple(Track(s, c, size, paths[i % len(paths)]) for i, (c, s) in enumerate(objects))
    return Clip("custom", tracks, bg, n_frames)
