"""Suite-wide guard: a clone of the repository is all the tests may read.

A user runs ``make test`` with nothing beside the clone, while CI happens to have ``../shared`` there.
An audit hook makes any file the suite opens, or any program it starts with a path argument, beside the
checkout (under its parent folder but outside it) fail loudly, so such a dependency cannot pass in CI
and break on a user's machine. Allowed beside it: hidden folders (caches, configs: the parent may be the
home folder), temp files (``tmp*``, ``pytest-of-*``: the parent may be the temp folder), the Python
installation, an explicitly configured ComfyUI host (TAV_COMFY_DIR, and the environment of
TAV_COMFY_PYTHON) and mutmut's work folder (TAV_MUTANTS_DIR, set by scripts/mutants.py: mutmut runs the
suite on a copy in its ``mutants/`` and reads its config beside it). A checkout directly under ``/`` guards ``/shared`` only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _prefixes(paths: list[str]) -> tuple[str, ...]:
    out = set()
    for p in paths:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            out.add(q.rstrip(os.sep) + os.sep)
    return tuple(out)


_INSIDE = _prefixes(
    [str(REPO), sys.prefix, sys.base_prefix]
    + ([os.environ["TAV_COMFY_DIR"]] if os.environ.get("TAV_COMFY_DIR") else [])
    # the host's Python: the environment its bin/ folder belongs to
    + ([str(Path(os.environ["TAV_COMFY_PYTHON"]).parent.parent)] if os.environ.get("TAV_COMFY_PYTHON") else [])
    + ([os.environ["TAV_MUTANTS_DIR"]] if os.environ.get("TAV_MUTANTS_DIR") else [])
)
_PARENT = REPO.parent if REPO.parent != Path(REPO.anchor) else Path(REPO.anchor) / "shared"
_BESIDE = _prefixes([str(_PARENT)])
#: names directly beside the checkout that are not a sibling project: caches/configs and temp files
_ALLOWED_NAMES = (".", "tmp", "pytest-of-")


def outside_checkout(path: object) -> bool:
    """True for a path under the checkout's parent folder that is not inside the checkout itself."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False  # file descriptors
    try:
        p = os.path.abspath(os.fsdecode(path)) + os.sep
    except (TypeError, ValueError):
        return False
    beside = next((b for b in _BESIDE if p.startswith(b)), None)
    if beside is None or p.startswith(_INSIDE):
        return False
    return not p[len(beside) :].startswith(_ALLOWED_NAMES)


def _guard(event: str, args: tuple) -> None:
    if event == "open":
        paths = [args[0]]
    elif event == "subprocess.Popen":
        argv = args[1]
        paths = [argv] if isinstance(argv, (str, bytes, os.PathLike)) else list(argv or [])
    else:
        return
    for path in paths:
        if outside_checkout(path):
            raise PermissionError(
                f"the test suite touched {os.fsdecode(path)!r}, outside the checkout {REPO}: a user's clone has "
                "nothing beside it. Ship what the test needs inside the repository."
            )


sys.addaudithook(_guard)
