"""Measuring memory at the dispatcher, on real or fake tensors, and CUDA's autocast on the CPU.

:class:`LiveBytes` is the memory planner's allocator model (and, on real tensors, its yardstick);
:class:`CudaAutocastPolicy` makes a CPU autocast run keep the tensors a CUDA autocast run keeps, so a
CUDA job can be planned and validated without a GPU.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive now and their high-water mark, seen at the dispatcher.

    Every op output's storage is counted once (rounded up to ``block`` bytes) until the storage is
    freed. Works on real and fake tensors alike, so the same probe measures a real CPU run. With
    ``fake=True``, ``.item()`` answers True for booleans (finiteness checks pass) and 0.5 otherwise
    (fake tensors have no values; the planned code reads them for control flow, noise levels, AdamW's
    step count and logging, for which 0.5 is valid; GradScaler would skip the step, see :meth:`Planner.plan`).
    """

    def __init__(self, *, block: int = 1, fake: bool = False) -> None:
        super().__init__()
        self.block, self.fake = block, fake
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        if self.fake and func is torch.ops.aten._local_scalar_dense.default:
            dtype = args[0].dtype
            return True if dtype == torch.bool else (0.5 if dtype.is_floating_point else 0)
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.adopt(t)
        return out

    def adopt(self, t: torch.Tensor) -> None:
        """Count ``t``'s storage if it is not counted yet (for tensors made before the mode was entered)."""
        s = t.untyped_storage()
        key = id(s)
        if key in self._sizes:
            return
        n = -(-s.nbytes() // self.block) * self.block
        self._sizes[key] = n
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(s, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def reset_peak(self) -> None:
        self.peak = self.live


def _fp32_ops() -> set[Callable]:
    """Ops CUDA autocast runs in fp32 that CPU autocast leaves in the input's type (the UNet's are
    GroupNorm, LayerNorm and the timestep embedding's exp)."""
    names = ("exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "pow", "acos", "asin")
    names += ("cosh", "sinh", "tan", "erfinv", "logsumexp", "cumsum", "cumprod", "norm")
    ops: set[Callable] = {F.layer_norm, F.group_norm, F.softplus, F.cosine_similarity, F.softmax, F.log_softmax}
    for n in names:
        ops.update(getattr(m, n) for m in (torch, torch.Tensor) if hasattr(m, n))
    ops.update({torch.Tensor.__pow__, torch.Tensor.__rpow__})
    return ops


_FP32_OPS = _fp32_ops()


class CudaAutocastPolicy(TorchFunctionMode):
    """While CPU autocast is on, also run CUDA autocast's fp32 ops in fp32 (inputs upcast, fp32 out),
    so a CPU run keeps the tensors a CUDA autocast run keeps.

    Autograd runs backward without torch-function modes (and restores the caller's modes after it),
    and gradient checkpointing recomputes blocks there: a global module pre-hook re-enters the policy
    for the rest of the backward pass. (No post-hook: recomputation stops early, mid-module.)
    """

    def __enter__(self) -> CudaAutocastPolicy:
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._hook = register_module_forward_pre_hook(self._pre)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._hook.remove()
        super().__exit__(*exc)

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        if self not in _get_current_function_mode_stack():
            TorchFunctionMode.__enter__(self)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        if func in _FP32_OPS and torch.is_autocast_enabled("cpu"):
            args, kwargs = tree_map(_upcast, (args, kwargs))
        return func(*args, **kwargs)


def _upcast(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


@contextlib.contextmanager
def emulation(*, cuda_autocast: bool, math_attention: bool) -> Iterator[None]:
    """A device's behaviour on the CPU: CUDA's autocast policy, the math SDPA kernel."""
    with contextlib.ExitStack() as stack:
        if cuda_autocast:
            stack.enter_context(CudaAutocastPolicy())
        if math_attention:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield
