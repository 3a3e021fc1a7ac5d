"""Makers of hostile and careless inputs shared by the bad-input suites (CLI, library, HTTP API)."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file


class Evil:
    """A pickle payload: unpickling it (weights_only=False) creates ``marker``. It must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def evil_pickle(path: Path, marker: Path) -> Path:
    """A torch-style checkpoint whose state dict hides the payload next to real tensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(2), "payload": Evil(marker)}}, path)
    assert not marker.exists()
    return path


def png_as_mp4(path: Path) -> Path:
    """A still image renamed .mp4 (ffmpeg happily decodes it as a one-frame video)."""
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(path, format="PNG")
    return path


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: max(1, int(len(data) * keep))])
    return dst


def with_nan_payload(src: Path, dst: Path) -> Path:
    """A safetensors file whose header is intact but whose tensor bytes were overwritten with NaN."""
    data = bytearray(src.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    start = 8 + n
    nan = struct.pack("<f", float("nan"))
    for i in range(start, min(len(data), start + 4096), 4):
        data[i : i + 4] = nan
    dst.write_bytes(bytes(data))
    return dst


def safetensors_with_meta(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    return path


def break_json(path: Path) -> Path:
    path.write_text("")
    return path


def files_under(root: Path) -> set[str]:
    """Every file (hidden/temp ones included) below ``root``, relative, for before/after comparisons."""
    out = set()
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


@contextlib.contextmanager
def small_disk(folder: Path, size_kib: int = 512) -> Iterator[Path]:
    """A real file system of ``size_kib`` (tmpfs) mounted at ``folder``, so every writer, ffmpeg included,
    meets a genuine ENOSPC. Mounting needs root: a user's non-root run skips, saying why; as root (CI) a
    failed mount fails the test, so the check cannot vanish where it is meant to run."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0777", "tmpfs", str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as err:
        done = subprocess.CompletedProcess(cmd, 1, "", str(err))
    if done.returncode != 0:
        why = f"a full disk needs a small tmpfs, and mounting one failed ({done.stderr.strip()})"
        if os.geteuid() == 0:
            pytest.fail(why)
        pytest.skip(why + "; run as root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill_disk(folder: Path, leave_kib: int = 0) -> None:
    """Fill ``folder``'s file system with a filler file, then free ``leave_kib`` (a write then fails part way)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - leave_kib * 1024))
