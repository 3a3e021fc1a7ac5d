"""Confinement: every file a request names resolves inside ComfyUI's folders, after symlinks, or is refused.

A prompt (the UI, a saved workflow, the HTTP API) can carry any string. The pack opens only regular
files whose real path (every symlink followed) lies inside the folders ComfyUI keeps for that kind of
input, and refuses everything else with one message per input that does not depend on whether the
path exists: a refusal must tell nothing about the server's disk. Directories, devices and fifos are
not regular files (reading /dev/zero never ends, opening a fifo blocks), so they are refused the
same way. Symlinks are followed, so a folder of models linked in whole (``models/checkpoints ->
/mnt/ckpts``) keeps working; a single file linked to a place outside is refused — register that place
in ComfyUI's extra_model_paths.yaml instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Optional

import folder_paths

#: the pack's own folder: its bundled assets (the shapes model, the paper's clips) may be linked into models/
PACK_DIR = os.path.realpath(Path(__file__).resolve().parents[1])
#: what a diffusers pipeline folder holds at its top
DIFFUSERS_INDEX = "model_index.json"


def real_roots(folders: Iterable[str]) -> list[str]:
    """The real paths of ``folders``, each once, in order."""
    out: list[str] = []
    for f in folders:
        r = os.path.realpath(f)
        if r not in out:
            out.append(r)
    return out


def is_inside(real: str, roots: Iterable[str]) -> bool:
    return any(os.path.commonpath([real, r]) == r for r in roots)


def real_path(base: str, name: str) -> Optional[str]:
    """``base/name`` with every symlink followed (an absolute ``name`` replaces ``base``); None if unusable."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return None
    try:
        return os.path.realpath(os.path.join(base, os.path.expanduser(name)))
    except (OSError, ValueError):
        return None


def confined_file(base: str, name: str, roots: Iterable[str]) -> Optional[str]:
    """The real path of ``base/name`` when it is a regular file inside ``roots``, else None."""
    real = real_path(base, name)
    if real is None or not is_inside(real, roots):
        return None
    return real if os.path.isfile(real) else None


def media_roots() -> list[str]:
    """ComfyUI's input, output and temp folders: where a video a prompt names may come from."""
    return real_roots(
        [folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory()]
    )


def model_roots(kind: str) -> list[str]:
    """Every folder ComfyUI registered for ``kind`` (extra_model_paths.yaml included), and the pack's own."""
    return real_roots([*folder_paths.get_folder_paths(kind), PACK_DIR])


def model_file(kind: str, name: str) -> Optional[str]:
    """The real path of model file ``name`` of ``kind`` (e.g. "checkpoints"), or None when it is refused."""
    roots = model_roots(kind)
    for base in folder_paths.get_folder_paths(kind):
        found = confined_file(base, name, roots)
        if found:
            return found
    return None


def required_model_file(kind: str, name: str) -> str:
    """The real path of model file ``name`` of ``kind``; refused otherwise with one message, the same
    whether or not the path exists."""
    path = model_file(kind, name)
    if path is None:
        raise ValueError(
            f"{name!r} is not a file in models/{kind} (files that lead outside ComfyUI's {kind} folders, also "
            "through symlinks, are refused): pick one from the list"
        )
    return path


def model_files(kind: str) -> list[str]:
    """ComfyUI's list of ``kind`` files, less those that resolve outside its folders: offer only what loads."""
    return [n for n in folder_paths.get_filename_list(kind) if model_file(kind, n)]


def walk_confined(root: str, roots: list[str]) -> Iterator[tuple[str, list[str]]]:
    """``(folder, file names)`` below ``root``, following symlinked folders that stay inside ``roots``;
    each real folder once, so a symlink loop ends."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen or not is_inside(real, roots):
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        files = []
        for e in entries:
            if e.is_dir():
                stack.append(e.path)
            elif e.is_file():
                files.append(e.name)
        yield folder, files


def diffusers_folders(prefix: str) -> dict[str, str]:
    """``{prefix + <relative name>: real path}`` for every pipeline folder (one with a model_index.json)
    under models/diffusers that resolves inside ComfyUI's diffusers folders or the pack."""
    found: dict[str, str] = {}
    roots = model_roots("diffusers")
    for base in folder_paths.get_folder_paths("diffusers"):
        if not os.path.isdir(base):
            continue
        for folder, files in walk_confined(base, roots):
            if DIFFUSERS_INDEX in files and folder != base:
                rel = os.path.relpath(folder, base).replace(os.sep, "/")
                found.setdefault(prefix + rel, os.path.realpath(folder))
    # a pipeline's sub-folders (unet/, vae/, ...) are not pipelines
    return {k: v for k, v in found.items() if not any(k.startswith(p + "/") for p in found)}


def output_folder(folder: str, root: str, where: str) -> str:
    """``folder`` (where a save node is about to write) when it resolves inside ``root``; refused otherwise,
    so a symlink in the output folder cannot carry a write elsewhere. ``where`` names ``root`` for the
    message (never the server's path)."""
    real = real_path(folder, ".")
    if real is None or not is_inside(real, real_roots([root])):
        raise ValueError(
            f"filename_prefix leads outside {where} (after following symlinks): use a prefix inside it, without "
            "'..' or links that lead out"
        )
    return folder
