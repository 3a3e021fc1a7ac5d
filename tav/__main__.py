import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/huggingface_hub read it: never touch the hub

from .cli import main  # noqa: E402

sys.exit(main())
