"""nodes/compat.py: each shim on stand-ins for the old and the new ComfyUI behaviour it tells apart.

The shims take ComfyUI's objects as arguments and import nothing of ComfyUI, so they run here; the e2e
suite runs them against real hosts (docs/compatibility.md).
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_compat():  # noqa: ANN202 - a module
    """nodes/compat.py alone (the nodes package imports ComfyUI)."""
    spec = importlib.util.spec_from_file_location("tav_nodes_compat", ROOT / "nodes" / "compat.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


compat = _load_compat()

SIGMAS = torch.tensor([14.6, 3.0, 0.5, 0.0])


def _options() -> dict:
    return {"transformer_options": {"sample_sigmas": SIGMAS}}


class OldStep:
    """set_step as before 2025-12: the whole timestep compared with the sigmas."""

    def set_step(self, timestep: torch.Tensor, model_options: dict) -> None:
        mask = torch.isclose(model_options["transformer_options"]["sample_sigmas"], timestep, rtol=1e-4)
        self._step = int(torch.nonzero(mask)[0].item())


class NewStep:
    """set_step since: the first timestep of the batch."""

    def set_step(self, timestep: torch.Tensor, model_options: dict) -> None:
        sigmas = model_options["transformer_options"]["sample_sigmas"]
        matches = torch.nonzero(torch.isclose(sigmas, timestep[0].to(sigmas.dtype), rtol=1e-4))
        if matches.numel():
            self._step = int(matches[0].item())


def test_old_set_step_really_fails_on_a_frame_batch() -> None:
    """The stand-in has the bug the probe looks for."""
    with pytest.raises(RuntimeError, match="must match the size"):
        OldStep().set_step(torch.full((6,), 3.0), _options())


@pytest.mark.parametrize(("cls", "takes_batch"), [(OldStep, False), (NewStep, True)])
def test_set_step_probe_tells_old_from_new(cls: type, takes_batch: bool) -> None:
    assert compat.set_step_takes_frame_batch(cls) is takes_batch


@pytest.mark.parametrize("cls", [OldStep, NewStep])
def test_set_step_timestep_lets_either_find_the_step(cls: type) -> None:
    frames = torch.full((6,), 0.5)  # cond + uncond, 3 frames each, all at sigma 0.5
    t = compat.set_step_timestep(cls, frames)
    handler = cls()
    handler.set_step(t, _options())
    assert handler._step == 2
    if cls is NewStep:
        assert t is frames  # a fixed host gets its input unchanged
    else:
        assert t.shape == (1,)


def test_causal_window_fix_is_turned_off_where_the_host_has_it() -> None:
    class Newer:
        causal_window_fix = True

    class Older:
        pass

    newer, older = Newer(), Older()
    compat.disable_causal_window_fix(newer)
    compat.disable_causal_window_fix(older)
    assert newer.causal_window_fix is False
    assert not hasattr(older, "causal_window_fix")  # no attribute invented on hosts without it


def test_window_copy_of_a_control_gets_its_own_hint_caches() -> None:
    class NewerControl:
        def __init__(self) -> None:
            self.cond_hints = {(4, 4): torch.zeros(1)}  # a hint prepared from the whole clip
            self.control_inputs = {(4, 4): torch.ones(1)}
            self.cond_hint = torch.zeros(1)

    original = NewerControl()
    window = copy.copy(original)
    assert window.cond_hints is original.cond_hints  # what a shallow copy does: the hazard
    compat.own_hint_caches(window)
    assert window.cond_hints == {} and window.control_inputs == {}
    assert (4, 4) in original.cond_hints and (4, 4) in original.control_inputs  # the input is not changed
    window.cond_hints[(2, 2)] = torch.ones(1)
    assert (2, 2) not in original.cond_hints


def test_older_control_without_caches_is_left_alone() -> None:
    class OlderControl:
        cond_hint = None

    control = OlderControl()
    compat.own_hint_caches(control)
    assert not any(hasattr(control, name) for name in compat.HINT_CACHES)
