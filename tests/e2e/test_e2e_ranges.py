"""The nodes at their steps maximum (1000): DDIM Invert, Sample and DDIM Sigmas, in-process on the host.

Each used to end in ``IndexError: index 1000 is out of bounds`` after all the work. The UNet call is
replaced by a cheap stand-in (1000 steps are 1000-2000 UNet calls); the nodes, the schedule, the
VAE and ComfyUI's own sampler and sigma table are real.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from test_e2e_faults import pack_nodes  # noqa: F401 - fixture

from tav import ddim
from tav.inflation import inflate
from tests.tiny import tiny_pipeline


@pytest.fixture
def cheap_unet(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """eps = 0.1 x instead of the UNet; returns the timesteps asked for."""
    seen: list[int] = []

    def predict(pipe, x, t, embeds, control=None):  # noqa: ANN001, ANN202 - ddim.predict's signature
        seen.append(int(t))
        return 0.1 * x

    monkeypatch.setattr(ddim, "predict", predict)
    return seen


def _result(out: Any) -> tuple:
    """A V3 node's outputs (its io.NodeOutput), with or without warnings shown in its UI."""
    return tuple(out.args)


def test_invert_and_sample_nodes_at_1000_steps(pack_nodes: ModuleType, cheap_unet: list[int]) -> None:  # noqa: F811
    pipe = inflate(tiny_pipeline())
    frames = torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    (inverted,) = _result(pack_nodes.TAV_DDIMInvert.execute(pipe, frames, 1000))
    assert sorted(cheap_unet) == list(range(1000)) and inverted["steps"] == 1000
    cheap_unet.clear()
    images, latent = _result(
        pack_nodes.TAV_Sample.execute(pipe, "y", "", 1000, 1.0, 0.0, 0, 2, 8, 8, inverted=inverted)
    )
    assert cheap_unet == list(range(999, -1, -1))
    assert images.shape == (2, 8, 8, 3) and torch.isfinite(latent["samples"]).all()


def test_ddim_sigmas_node_at_1000_steps_runs_in_comfys_sampler(pack_nodes: ModuleType) -> None:  # noqa: F811
    """ComfyUI's own SD sigma table: 1000 strictly descending sigmas (t = 999..0), and its Euler (= ddim)
    sampler takes all 999 steps to a finite result."""
    import comfy.k_diffusion.sampling as k
    import comfy.model_sampling

    table = comfy.model_sampling.ModelSamplingDiscrete()

    class Model:
        def get_model_object(self, name: str) -> object:
            return table

    (sigmas,) = pack_nodes.TAV_DDIMSigmas.execute(Model(), 1000).args
    assert sigmas.shape == (1000,) and bool((sigmas[:-1] > sigmas[1:]).all())
    torch.testing.assert_close(sigmas, table.sigmas.flip(0).float())
    calls = []

    def denoiser(x: torch.Tensor, sigma: torch.Tensor, **kwargs: object) -> torch.Tensor:
        calls.append(float(sigma[0]))
        return x / (1 + sigma[0] ** 2).sqrt()

    x = k.sample_euler(denoiser, torch.randn(1, 4, 2, 2) * sigmas[0], sigmas, disable=True)
    assert len(calls) == 999 and torch.isfinite(x).all()
