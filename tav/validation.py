"""One validation layer for user-facing settings and files, run by the CLI and the nodes before any compute.

Why: work must not be thrown away (an output path checked only after an hour of tuning), garbage
must never be reported as success, and every refusal should say what was wrong and what to do.
Everything here is cheap (no model is loaded, nothing is decoded) and raises :class:`InputError`
(a ``ValueError``) with one readable sentence; front ends show it as-is (CLI: exit status 2;
ComfyUI: a node error or a ``/prompt`` validation error).

Rules for requests that cannot be met exactly (one place, so the CLI and nodes agree):

- fewer frames than asked (short clip, stride or start near the end) but at least 2: a
  :class:`TavWarning` naming the count and how to get the full count; a 2-frame clip still has motion;
- 1 frame when more were asked, or a still image given as a video: an error, since tuning on one
  frame learns no motion and would silently produce a different result than the one asked for;
- a prompt longer than the text encoder's window (77 tokens for SD): a warning that names the dropped
  words; Stable Diffusion itself always truncated, so refusing would break common prompts;
- non-finite numbers anywhere (settings, weights, latents, loss, sampler state): an error.

Job sizes (will it fit in memory?) are the planner's business, not this module's: see
:mod:`tav.job_size` (a simple estimate) and :mod:`tav.memory_plan` (the planner), which import this
module and never the other way round.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Optional

__all__ = [
    "InputError",
    "NonFiniteError",
    "TavWarning",
    "check_device",
    "check_finite_tensor",
    "check_finite_tensors",
    "check_input_file",
    "check_number",
    "check_output_dir",
    "check_output_file",
    "check_seed",
    "os_error_message",
    "warn",
]

#: torch.Generator.manual_seed accepts 0 .. 2**64 - 1 (negative values alias the same range)
SEED_MAX = 2**64 - 1
#: widget limits shared by the CLI and the nodes
MAX_FRAMES = 1024
MAX_SIDE = 4096
MAX_STEPS = 1000
MAX_TUNE_STEPS = 100_000


class InputError(ValueError):
    """A setting or file the job cannot use; the message says what is wrong and what to do."""


class NonFiniteError(ValueError):
    """NaN or infinity where real numbers must be: the result would be garbage, so the job stops."""


class TavWarning(UserWarning):
    """A request that was met only approximately (fewer frames, a truncated prompt)."""


def warn(message: str) -> None:
    """Emit a :class:`TavWarning`; the CLI prints it as one line, the nodes log it and show it in the UI."""
    warnings.warn(message, TavWarning, stacklevel=2)


# --- numbers -------------------------------------------------------------------------------------


def check_number(
    name: str,
    value: Any,
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    *,
    integer: bool = False,
    hint: str = "",
) -> Any:
    """``value`` if it is a finite number in ``[lo, hi]`` (an int when ``integer``), else :class:`InputError`."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if not bad and integer and isinstance(value, float):
        bad = not value.is_integer()
    if bad:
        kind = "a whole number" if integer else "a number"
        raise InputError(f"{name} must be {kind}, got {value!r}{_hint(hint)}")
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}{_hint(hint)}")
    if integer:
        value = int(value)
    if lo is not None and value < lo:
        raise InputError(f"{name} must be at least {lo}, got {value}{_hint(hint)}")
    if hi is not None and value > hi:
        raise InputError(f"{name} must be at most {hi}, got {value}{_hint(hint)}")
    return value


def check_seed(name: str, value: Any) -> int:
    """A seed torch can take: a whole number in 0 .. 2**64 - 1."""
    return check_number(name, value, 0, SEED_MAX, integer=True, hint="use a seed between 0 and 2**64 - 1")


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""


# --- devices -------------------------------------------------------------------------------------


def check_device(name: str) -> Any:
    """A usable ``torch.device`` for ``name`` ("auto", "cpu", "cuda", "cuda:1", "mps"), or :class:`InputError`."""
    import torch

    text = str(name).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {name!r} asked for, but no CUDA GPU is available here; use --device cpu (or auto)"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"device {name!r} does not exist: this machine has {count} CUDA device(s), cuda:0..")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(f"device {name!r} asked for, but MPS is not available here; use cpu (or auto)")
        return dev
    raise InputError(f"device type {dev.type!r} is not supported; use auto, cpu, cuda, cuda:N or mps")


# --- files ---------------------------------------------------------------------------------------


def _nearest_existing(path: str) -> str:
    cur = path
    while not os.path.exists(cur):
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    return cur


def check_output_file(path: Any, *, exts: Optional[Iterable[str]] = None, what: str = "output file") -> str:
    """The absolute path of a file we may (over)write: not a folder, under a writable folder, right extension.

    Missing parent folders are fine (writers create them) as long as the nearest existing one is a
    writable folder, not a file.
    """
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what} path is empty; give a file name such as out.safetensors")
    full = os.path.abspath(os.path.expanduser(text))
    if os.path.isdir(full):
        raise InputError(f"{what} {text!r} is a folder; give a file name inside it, e.g. {os.path.join(text, 'out')}")
    if exts is not None:
        exts = tuple(exts)
        if not full.lower().endswith(exts):
            raise InputError(f"{what} {text!r} must end with {' or '.join(exts)}")
    _check_writable_parent(os.path.dirname(full), text, what)
    return full


def check_output_dir(path: Any, *, what: str = "output folder") -> str:
    """The absolute path of a folder we may write into (created later if missing)."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what} path is empty")
    full = os.path.abspath(os.path.expanduser(text))
    if os.path.exists(full) and not os.path.isdir(full):
        raise InputError(f"{what} {text!r} is a file, not a folder; choose a folder path")
    _check_writable_parent(full, text, what)
    return full


def _check_writable_parent(folder: str, text: str, what: str) -> None:
    base = _nearest_existing(folder)
    if not os.path.isdir(base):
        raise InputError(f"cannot write {what} {text!r}: {base!r} is a file, not a folder; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {text!r}: no write permission in {base!r}; choose another folder")


def check_input_file(path: Any, what: str = "file") -> str:
    """The absolute path of an existing, readable, non-empty regular file (devices and pipes are refused:
    their size reads 0 and reading them never ends or blocks)."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what} path is empty")
    full = os.path.abspath(os.path.expanduser(text))
    if not os.path.exists(full):
        raise FileNotFoundError(f"{what} not found: {text}")
    if os.path.isdir(full):
        raise InputError(f"{what} {text!r} is a folder, expected a file")
    mode = os.stat(full).st_mode  # stat, not open: a FIFO would block until someone writes to it
    if not stat.S_ISREG(mode):
        raise InputError(f"{what} {text!r} is {_special_kind(mode)}, not a regular file; give a file saved on disk")
    if not os.access(full, os.R_OK):
        raise InputError(f"{what} {text!r} is not readable (permission denied)")
    if os.path.getsize(full) == 0:
        raise InputError(f"{what} {text!r} is empty (0 bytes): it was not written completely; re-create it")
    return full


def _special_kind(mode: int) -> str:
    """What a non-regular file is, in words (``/dev/zero`` is a character device, endless and sizeless)."""
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"))
    return next((name for test, name in kinds if test(mode)), "a socket or other special file")


def os_error_message(path: str, err: OSError, action: str = "write") -> str:
    """One actionable sentence for a failed write (full disk, permissions, read-only file system)."""
    if err.errno == errno.ENOSPC:
        why = "the disk is full (no space left on device); free some space or choose another folder"
    elif err.errno == errno.EDQUOT:
        why = "the disk quota is exceeded; free some space or choose another folder"
    elif err.errno in (errno.EACCES, errno.EPERM):
        why = "permission denied; choose a folder you can write to"
    elif err.errno == errno.EROFS:
        why = "the file system is read-only; choose another folder"
    else:
        why = f"{err.strerror or err}"
    return f"could not {action} {path!r}: {why}"


# --- tensors -------------------------------------------------------------------------------------


def check_finite_tensor(tensor: Any, what: str, *, hint: str = "") -> None:
    """:class:`NonFiniteError` if ``tensor`` holds NaN or infinity (``what`` names it and its file)."""
    import torch

    if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
        nan = bool(torch.isnan(tensor).any())
        kind = "NaN" if nan else "infinite"
        raise NonFiniteError(f"{what} holds {kind} values{_hint(hint)}")


def check_finite_tensors(tensors: Mapping[str, Any], where: str, *, hint: str = "") -> None:
    """Check every tensor of a state dict; the message names the first bad tensor and ``where`` it came from."""
    for key, value in tensors.items():
        check_finite_tensor(value, f"{where}: tensor {key!r}", hint=hint)
