"""``python -m tav``: Ctrl-C at any moment, even while torch is still importing, ends with one line."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/huggingface_hub read it: never touch the hub


def _entry() -> int:
    try:
        from .cli import main

        return main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(_entry())
