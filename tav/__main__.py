"""``python -m tav``: Ctrl-C at any moment, even while torch is still importing, ends with one line.

Ctrl-C during the heavy imports is deferred until they finish: the lazy importers of transformers
and diffusers turn a KeyboardInterrupt into unrelated RuntimeErrors (and half-imported modules).
"""

import os
import signal
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/huggingface_hub read it: never touch the hub

_PRESSED = False


def _defer(signum: int, frame: object) -> None:
    global _PRESSED
    _PRESSED = True


def _entry() -> int:
    signal.signal(signal.SIGINT, _defer)
    try:
        from .cli import main
    except BaseException:
        if not _PRESSED:
            raise
    if _PRESSED:
        print("interrupted", file=sys.stderr)
        return 130
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return main()


if __name__ == "__main__":
    sys.exit(_entry())
