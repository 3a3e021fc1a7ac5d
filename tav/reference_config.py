"""Run the official Tune-A-Video YAML configs (``configs/*.yaml`` of the reference) unchanged.

The config's keys map one-to-one onto :class:`tav.editing.EditConfig`; only the model path (a hub
name in the originals) and, for smoke runs, explicit ``--set key=value`` overrides change. The
reference's validation every 100 steps is not repeated: we tune once, invert once, then sample
each validation prompt, which is what its final validation does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from .editing import EditConfig, PhaseProgress, check_edit_config, tune_and_edit, write_edits
from .tuning import TuneConfig, half_dtype
from .validation import MAX_FRAMES, MAX_SIDE, MAX_STEPS, MAX_TUNE_STEPS, SEED_MAX, InputError, check_output_dir
from .windows import Windows

#: ``on_edits(prompts, videos, source frames, samples folder) -> paths written``
OnEdits = Callable[[Sequence[str], Sequence[torch.Tensor], torch.Tensor, Path], list[str]]


class ConfigError(InputError):
    """An official config with problems; ``problems`` holds one sentence each (the CLI prints a line per problem)."""

    def __init__(self, path: Any, problems: list[str]) -> None:
        self.problems = [f"{path}: {p}" for p in problems]
        super().__init__("; ".join(self.problems))


#: the most values a config may expand to through YAML aliases (the official ones hold about 40)
MAX_YAML_VALUES = 10_000

# The official config's schema (the reference's train.py arguments that this pack reads). A kind is
# "str", "int", "number" (also a numeric string: YAML 1.1 reads 3e-5 as text), "bool", "strings" (a
# list of strings). Keys the pack does not use (mixed_precision, use_8bit_adam, ...) are not checked.
REQUIRED = "required"
SCHEMA: dict[str, Any] = {
    "pretrained_model_path": ("str", REQUIRED),
    "output_dir": ("str", None),
    "train_data": {
        "video_path": ("str", REQUIRED),
        "prompt": ("str", REQUIRED),
        "n_sample_frames": ("int", REQUIRED, 1, MAX_FRAMES),
        "width": ("int", REQUIRED, 8, MAX_SIDE),
        "height": ("int", REQUIRED, 8, MAX_SIDE),
        "sample_start_idx": ("int", None, 0, None),
        "sample_frame_rate": ("int", None, 1, 10_000),
    },
    "validation_data": {
        "prompts": ("strings", REQUIRED),
        "video_length": ("int", None, 1, MAX_FRAMES),
        "width": ("int", None, 8, MAX_SIDE),
        "height": ("int", None, 8, MAX_SIDE),
        "num_inference_steps": ("int", None, 1, MAX_STEPS),
        "guidance_scale": ("number", None, 0, 100),
        "use_inv_latent": ("bool", None),
        "num_inv_steps": ("int", None, 1, MAX_STEPS),
    },
    "learning_rate": ("number", None, 1e-10, 1.0),
    "adam_weight_decay": ("number", None, 0, 10),
    "max_grad_norm": ("number", None, 0, None),
    "max_train_steps": ("int", None, 0, MAX_TUNE_STEPS),
    "trainable_modules": ("strings", None),
    "seed": ("int", None, 0, SEED_MAX),
    "gradient_checkpointing": ("bool", None),
}
_KINDS = {"str": "a string", "int": "a whole number", "number": "a number", "bool": "true or false",
          "strings": "a list of strings"}  # fmt: skip


def _brief(value: Any) -> str:
    """A short description of a value for a message (bounded: a value may be a huge or recursive structure)."""
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(key: str, spec: tuple, value: Any) -> Optional[str]:
    """What is wrong with ``value`` for ``spec`` (None: nothing)."""
    kind, lo, hi = spec[0], *(list(spec[2:]) + [None, None])[:2]
    if kind == "str" and not isinstance(value, str):
        return f"{key} must be {_KINDS[kind]}, got {_brief(value)}"
    if kind == "bool" and not isinstance(value, bool):
        return f"{key} must be {_KINDS[kind]}, got {_brief(value)}"
    if kind == "strings":
        if isinstance(value, str):
            return f'{key} must be a list of strings, got one string: write it as a list (- "..." on its own line)'
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"{key} must be {_KINDS[kind]}, got {_brief(value)}"
        if not value:
            return f"{key} is an empty list: nothing would be done; give at least one entry"
        return None
    if kind in ("int", "number"):
        number = value
        if kind == "number" and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        wrong = isinstance(number, bool) or not isinstance(number, (int, float))
        if wrong or (kind == "int" and not isinstance(number, int)) or not math.isfinite(number):
            return f"{key} must be {_KINDS[kind]}, got {_brief(value)}"
        if lo is not None and number < lo:
            return f"{key} must be at least {lo}, got {number}"
        if hi is not None and number > hi:
            return f"{key} must be at most {hi}, got {number}"
    return None


def config_problems(cfg: Any) -> list[str]:
    """Every way ``cfg`` (a loaded official config) breaks :data:`SCHEMA`, one sentence each."""
    if not isinstance(cfg, dict):
        return [f"expected a YAML mapping of settings (a Tune-A-Video config), got {_brief(cfg)}"]
    problems = []

    def walk(node: dict, schema: dict, prefix: str) -> None:
        for key, spec in schema.items():
            name = prefix + key
            if key not in node:
                required = isinstance(spec, dict) or spec[1] == REQUIRED
                problems.extend(
                    [f"{name} is missing: add it (every official config sets it, see official_examples/configs)"]
                    if required
                    else []
                )
            elif isinstance(spec, dict):
                if isinstance(node[key], dict):
                    walk(node[key], spec, name + ".")
                else:
                    problems.append(f"{name} must be a section (a mapping of settings), got {_brief(node[key])}")
            else:
                problems.extend(p for p in [_problem(name, spec, node[key])] if p)

    walk(cfg, SCHEMA, "")
    for section in ("train_data", "validation_data"):
        for side in ("width", "height"):
            value = cfg.get(section, {}).get(side) if isinstance(cfg.get(section), dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value % 8:
                problems.append(f"{section}.{side} must be a multiple of 8 (the VAE downsamples by 8), got {value}")
    train, val = cfg.get("train_data"), cfg.get("validation_data")
    if not problems and val.get("video_length", train["n_sample_frames"]) != train["n_sample_frames"]:
        problems.append("validation_data.video_length must equal train_data.n_sample_frames (the inverted latents)")
    return problems


def _safe_yaml(text: str, path: Any) -> Any:
    """``yaml.safe_load`` that refuses alias bombs: values reachable through aliases are counted on the
    parsed node graph (never expanded), so a few lines that would expand to billions are refused at once."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_values(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _count_values(root: yaml.Node, path: Any) -> None:
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(path, ["a YAML alias refers to itself (a recursive structure): write the values out"])
        active.add(key)
        children = node.value if isinstance(node.value, list) else []
        items = [c for pair in children for c in pair] if isinstance(node, yaml.MappingNode) else children
        sizes[key] = min(1 + sum(size(c) for c in items), MAX_YAML_VALUES + 1)
        active.discard(key)
        return sizes[key]

    if size(root) > MAX_YAML_VALUES:
        raise ConfigError(
            path,
            [f"its YAML aliases expand to more than {MAX_YAML_VALUES} values (an alias bomb?): write the values out"],
        )


def _set(cfg: dict, dotted: str, raw: str) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for key in parents:
        if not isinstance(node.get(key), dict):
            raise InputError(f"--set {dotted}: {key!r} is not a section of the config")
        node = node[key]
    if leaf not in node:
        raise InputError(f"--set {dotted}: the config has no key {leaf!r}")
    node[leaf] = _safe_yaml(raw, f"--set {dotted}")


def load_reference_config(path: str | os.PathLike, overrides: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """An official config, loaded with ``yaml.safe_load`` (aliases bounded), ``--set`` overrides applied, and
    checked against :data:`SCHEMA`: every problem is reported at once, before any work."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text file (not UTF-8): give an official Tune-A-Video YAML config") from None
    try:
        cfg = _safe_yaml(text, path)
        if isinstance(cfg, dict):
            for k, v in (overrides or {}).items():
                _set(cfg, k, v)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        why = " ".join(str(getattr(e, "problem", None) or e).split())[:160]
        raise InputError(
            f"{path} is not valid YAML{at}: {why} (python tags and other custom types are refused)"
        ) from None
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(path, problems)
    return cfg


def edit_config(cfg: dict[str, Any]) -> EditConfig:
    """The reference config's training and validation settings as an :class:`EditConfig`."""
    val = cfg["validation_data"]
    return EditConfig(
        tune=TuneConfig(
            steps=int(cfg.get("max_train_steps", 500)),
            lr=float(cfg.get("learning_rate", 3e-5)),
            weight_decay=float(cfg.get("adam_weight_decay", 1e-2)),
            max_grad_norm=float(cfg.get("max_grad_norm", 1.0)),
            seed=int(cfg.get("seed", 33)),
            trainable_modules=tuple(cfg.get("trainable_modules", TuneConfig().trainable_modules)),
            gradient_checkpointing=bool(cfg.get("gradient_checkpointing", True)),  # the configs: True
        ),
        inversion_steps=int(val.get("num_inv_steps", 50)),
        use_inversion=bool(val.get("use_inv_latent", True)),
        steps=int(val.get("num_inference_steps", 50)),
        guidance_scale=float(val.get("guidance_scale", 7.5)),
        seed=int(cfg.get("seed", 33)),
    )


def _find_video(video_path: str, config_path: Path, video_dir: Optional[str]) -> Path:
    candidates = [Path(video_path)]
    if video_dir:
        candidates.insert(0, Path(video_dir) / Path(video_path).name)
    candidates.append(config_path.parent.parent / "videos" / Path(video_path).name)  # official_examples layout
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"the config's video {video_path!r} was not found (looked in {[str(c) for c in candidates]}); "
        "pass --video-dir with the folder holding it"
    )


def run_reference_config(
    config_path: str | os.PathLike,
    *,
    pretrained: Optional[str] = None,
    device: torch.device = torch.device("cpu"),
    video_dir: Optional[str] = None,
    output_dir: Optional[str] = None,
    overrides: Optional[dict[str, str]] = None,
    callback: Optional[PhaseProgress] = None,
    whole_clip_overlap: Optional[int] = None,
    on_edits: Optional[OnEdits] = None,
) -> list[str]:
    """Tune, invert and sample every validation prompt of one official config; returns written files.

    ``whole_clip_overlap``: edit the whole source clip (every ``sample_frame_rate``-th frame from
    ``sample_start_idx`` to the end) in windows of ``n_sample_frames`` overlapping by this much,
    tuning on ``n_sample_frames`` frames picked evenly from it (see :mod:`tav.windows`).
    ``on_edits(prompts, videos, source frames, samples folder)`` runs once the edits are written and
    returns what it wrote (e.g. scores: ``config --score-clip``).
    """
    from .checkpoints import load_pipeline
    from .video_io import read_video
    from .weights import save_tuned

    config_path = Path(config_path)
    cfg = load_reference_config(config_path, overrides)
    model = pretrained or cfg["pretrained_model_path"]
    if not os.path.exists(model):
        raise FileNotFoundError(f"model {model!r} not found locally; pass --pretrained PATH (no downloads here)")
    train, val = cfg["train_data"], cfg["validation_data"]
    ecfg = edit_config(cfg)  # the schema has checked every type
    check_edit_config(ecfg)
    out = Path(output_dir or cfg.get("output_dir", "outputs"))
    check_output_dir(out)
    clip = read_video(
        _find_video(train["video_path"], config_path, video_dir),
        n_frames=int(train["n_sample_frames"]) if whole_clip_overlap is None else 0,
        start=int(train.get("sample_start_idx", 0)),
        stride=int(train.get("sample_frame_rate", 1)),
        width=int(train["width"]),
        height=int(train["height"]),
    )
    dtype = half_dtype(device) if device.type == "cuda" else torch.float32  # what tuning autocasts to
    if whole_clip_overlap is not None:
        ecfg.windows = Windows(int(train["n_sample_frames"]), whole_clip_overlap)
        ecfg.windows.spans(clip.frames.shape[0])  # a window longer than the clip fails before loading
    pipe = load_pipeline(model, device=device, dtype=dtype)
    result = tune_and_edit(pipe, clip.frames, train["prompt"], val["prompts"], ecfg, callback)
    written = write_edits(out / "samples", val["prompts"], result.videos, clip.fps, exts=(".gif",))
    save_tuned(out / "tuned.safetensors", result.pipeline)
    extra = on_edits(val["prompts"], result.videos, clip.frames, out / "samples") if on_edits else []
    return [*written, str(out / "tuned.safetensors"), *extra]
