"""The nodes at their steps maximum (1000), run by ``test_e2e_ranges.py`` with the host's Python.

DDIM Invert and Sample with the UNet call replaced by a cheap stand-in (1000 steps are 1000-2000 UNet
calls; the nodes, the schedule and the VAE are real), and DDIM Sigmas through ComfyUI's own SD sigma
table and Euler (= ddim) sampler. Prints ``RESULT`` and a JSON object of what was seen.

Usage: python ranges_inprocess.py --comfy-dir DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from types import ModuleType

from inprocess import REPO, boot_pack


def _tiny() -> ModuleType:
    """tests/tiny.py by path (the host has a ``tests`` package of its own)."""
    spec = importlib.util.spec_from_file_location("tav_tests_tiny", REPO / "tests" / "tiny.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy-dir", required=True)
    boot_pack(ap.parse_args().comfy_dir)
    import comfy.k_diffusion.sampling as k
    import comfy.model_sampling
    import torch
    from tav_pack import nodes

    from tav import ddim
    from tav.inflation import inflate

    seen: list[int] = []

    def predict(pipe, x, t, embeds, control=None):  # noqa: ANN001, ANN202 - ddim.predict's signature
        seen.append(int(t))
        return 0.1 * x

    ddim.predict = predict
    res: dict = {}
    pipe = inflate(_tiny().tiny_pipeline())
    frames = torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    (inverted,) = nodes.TAV_DDIMInvert.execute(pipe, frames, 1000).args
    res["invert_timesteps"], res["inverted_steps"] = sorted(seen), inverted["steps"]
    seen.clear()
    images, latent = nodes.TAV_Sample.execute(pipe, "y", "", 1000, 1.0, 0.0, 0, 2, 8, 8, inverted=inverted).args
    res["sample_timesteps"] = list(seen)
    res["images_shape"], res["latent_finite"] = list(images.shape), bool(torch.isfinite(latent["samples"]).all())

    table = comfy.model_sampling.ModelSamplingDiscrete()

    class Model:
        def get_model_object(self, name: str) -> object:
            return table

    (sigmas,) = nodes.TAV_DDIMSigmas.execute(Model(), 1000).args
    res["sigmas_shape"] = list(sigmas.shape)
    res["sigmas_descending"] = bool((sigmas[:-1] > sigmas[1:]).all())
    res["sigmas_vs_table"] = float((sigmas - table.sigmas.flip(0).float()).abs().max())
    calls: list[float] = []

    def denoiser(x: torch.Tensor, sigma: torch.Tensor, **kwargs: object) -> torch.Tensor:
        calls.append(float(sigma[0]))
        return x / (1 + sigma[0] ** 2).sqrt()

    x = k.sample_euler(denoiser, torch.randn(1, 4, 2, 2) * sigmas[0], sigmas, disable=True)
    res["euler_calls"], res["euler_finite"] = len(calls), bool(torch.isfinite(x).all())
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
