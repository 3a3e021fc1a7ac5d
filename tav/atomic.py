"""Atomic file writes that honour the umask: a hidden temp file next to the target, then ``os.replace``.

Why: a crash, Ctrl-C, Cancel or a full disk must never leave a truncated file behind or damage an
existing file of the same name, and the result must get the permissions the user's umask asks for
(``tempfile.mkstemp`` creates files ``-rw-------``, which the rename would keep).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import uuid
from collections.abc import Callable, Iterator

from .validation import os_error_message

_UMASK_LOCK = threading.Lock()


class WriteError(OSError):
    """Writing an output failed (full disk, permissions); nothing was written, an existing file is intact."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def current_umask() -> int:
    """The process umask (read from /proc when possible; else set-and-restore under a lock)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temp path in the target's folder; on success it replaces ``path`` with mode ``0o666 & ~umask``.

    On any exception (including KeyboardInterrupt) the temp file is removed and the target is left
    as it was; an ``OSError`` becomes a :class:`WriteError` whose message names the file and the cure.
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise WriteError(err.errno, os_error_message(path, err, "create the folder for")) from err
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, path)
        except WriteError:
            raise
        except OSError as err:
            raise WriteError(err.errno, os_error_message(path, err)) from err
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def verify_written(tmp: str, path: str | os.PathLike, reads_back: Callable[[str], None]) -> None:
    """:class:`WriteError` unless ``tmp`` is non-empty and ``reads_back(tmp)`` succeeds.

    Why: a writer can report success with nothing on disk (ffmpeg on a full disk left a 0-byte mp4);
    checking before the rename keeps such a file from replacing a good one.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        size = os.path.getsize(tmp)
    except OSError as err:
        raise WriteError(err.errno, os_error_message(path, err)) from None
    if size == 0:
        raise WriteError(
            errno.EIO, f"could not write {path!r}: nothing was written (0 bytes); check the free disk space and retry"
        )
    try:
        reads_back(tmp)
    except Exception as err:  # any reader error means the bytes on disk are not what was meant
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WriteError(
            errno.EIO,
            f"could not write {path!r}: the written file does not read back ({why}); check the disk and retry",
        ) from None
