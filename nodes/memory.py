"""The pipeline nodes' models under ComfyUI's memory manager.

A tav pipeline is plain torch modules, not a ComfyUI MODEL, so ComfyUI would neither know it holds GPU
memory nor move it. Each pipeline (and a ControlNet a Sample uses) gets a ModelPatcher over a container
of its modules, and a node that computes with it runs inside :func:`on_device`:

- ``load_models_gpu`` loads it to ComfyUI's device, first evicting ComfyUI's own models as needed, and
  from then on ComfyUI may evict it (whole, to its offload device) when another model needs the memory;
- it is always loaded whole: diffusers layers cannot compute with weights left on the CPU (ComfyUI's
  partial ``--lowvram`` loading needs its own ``comfy.ops`` layers), so ``--lowvram``/``--novram`` are
  honoured by moving it back to the offload device as soon as the node finishes;
- the offload device is ComfyUI's (the CPU; the GPU itself with ``--highvram``/``--gpu-only``), and
  with ``--cpu`` both devices are the CPU.

Moving a module between devices changes no value, so "nodes never mutate their inputs" holds.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Optional

import comfy.model_management as mm
import comfy.model_patcher
import torch
from torch import nn

#: id(owner) -> patcher, for the owner's lifetime (owners are pipelines or modules: not always hashable)
_patchers: dict[int, PipelinePatcher] = {}


class PipelinePatcher(comfy.model_patcher.ModelPatcher):
    """A ModelPatcher that only ever loads its modules whole (see the module docstring)."""

    def partially_load(
        self, device_to: torch.device, extra_memory: float = 0, force_patch_weights: bool = False
    ) -> int:
        loaded = super().partially_load(device_to, 1e32, force_patch_weights)
        # modules shared with another pipeline (a tuned one shares its frozen weights) may have been moved by
        # that pipeline's patcher: Module.to is a no-op for what is already on device_to
        self.model.to(device_to)
        return loaded


def offload_device() -> torch.device:
    """Where a loader puts a pipeline and where ComfyUI evicts it to (the CPU unless --highvram/--gpu-only)."""
    return mm.unet_offload_device()


def patcher_for(owner: Any, modules: dict[str, nn.Module]) -> PipelinePatcher:
    """The patcher of ``owner``'s ``modules`` (one per owner, made on first use)."""
    patcher = _patchers.get(id(owner))
    if patcher is None:
        container = nn.ModuleDict({k: m for k, m in modules.items() if m is not None})
        patcher = PipelinePatcher(container, load_device=mm.get_torch_device(), offload_device=offload_device())
        _patchers[id(owner)] = patcher
        weakref.finalize(owner, _patchers.pop, id(owner), None)
    return patcher


def pipeline_patcher(pipe: Any) -> PipelinePatcher:
    return patcher_for(pipe, {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder})


def is_loaded(patcher: PipelinePatcher) -> bool:
    """Whether ComfyUI's manager holds ``patcher`` as loaded."""
    return any(m.model is patcher for m in mm.current_loaded_models)


def unload(patcher: PipelinePatcher) -> None:
    """Move ``patcher``'s modules to its offload device and drop it from ComfyUI's loaded models."""
    for i, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is patcher:
            mm.current_loaded_models.pop(i).model_unload()
            mm.soft_empty_cache()
            return


def offload_after_node() -> bool:
    """ComfyUI's low-VRAM modes keep no model on the GPU between nodes."""
    return mm.vram_state in (mm.VRAMState.LOW_VRAM, mm.VRAMState.NO_VRAM)


@contextlib.contextmanager
def on_device(pipe: Any, control: Optional[Any] = None) -> Iterator[Callable[[Any], None]]:
    """Run a node's compute with ``pipe`` (and ``control``'s ControlNet) loaded by ComfyUI's manager.

    Yields ``output``: call it with a pipeline the node made on the device (Tune's tuned pipeline) so that
    it, too, is registered with the manager and follows the same rule."""
    patchers = [pipeline_patcher(pipe)]
    if control is not None:
        patchers.append(patcher_for(control, {"controlnet": control.model}))
    mm.load_models_gpu(patchers, force_full_load=True)

    def output(made: Any) -> None:
        patcher = pipeline_patcher(made)
        mm.load_models_gpu([patcher], force_full_load=True)
        patchers.append(patcher)

    try:
        yield output
    finally:
        if offload_after_node():
            for p in patchers:
                unload(p)
