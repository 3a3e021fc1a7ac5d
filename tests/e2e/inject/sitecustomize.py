"""Fault injection for the e2e ComfyUI server (on its PYTHONPATH; the server runs no other test code).

While the file named by ``TAV_E2E_OOM_FLAG`` exists, the next ``torch.optim.AdamW`` step (only
tuning uses one) removes it and raises CUDA's out-of-memory error, as a GPU that runs out mid-run
would. torch is not imported here: the patch is applied when ``torch.optim.adamw`` is first imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

FLAG = os.environ.get("TAV_E2E_OOM_FLAG")


def _patch(module: object) -> None:
    import torch

    adamw = module.AdamW  # type: ignore[attr-defined]
    real = adamw.step

    def step(self: object, *args: object, **kwargs: object) -> object:
        if FLAG and os.path.exists(FLAG):
            os.remove(FLAG)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by the e2e test)")
        return real(self, *args, **kwargs)

    adamw.step = step


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != "torch.optim.adamw":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module: object) -> None:
            load(module)
            _patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if FLAG:
    sys.meta_path.insert(0, _Finder())
