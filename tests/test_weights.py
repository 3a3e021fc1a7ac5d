"""Tuned-weights files and official Tune-A-Video checkpoints."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tav.inflation import inflate, load_reference_unet
from tav.tuning import TuneConfig, trainable_names, tune
from tav.validation import InputError
from tav.weights import fingerprint, load_tuned, read_metadata, save_tuned

from .tiny import tiny_pipeline


@pytest.fixture(scope="module")
def tuned():
    base = tiny_pipeline(seed=11)
    video = inflate(base)
    latents = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = base.encode_prompt("a green triangle")
    cfg = TuneConfig(steps=2, lr=1e-3)
    return base, tune(video, latents, emb, cfg).pipeline, cfg


def test_round_trip_is_bit_exact(tuned, tmp_path) -> None:
    base, pipe, cfg = tuned
    path = tmp_path / "clip.safetensors"
    meta = save_tuned(
        path, pipe, trainable_modules=cfg.trainable_modules, prompt="a green triangle", frames=3, height=64, width=64
    )
    assert read_metadata(path) == meta
    assert meta["base_fingerprint"] == fingerprint(base.unet)
    assert json.loads(meta["trainable_modules"]) == list(cfg.trainable_modules)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    want = set(trainable_names(pipe.unet.unet, cfg.trainable_modules))
    assert want <= keys and all(k in want or "norm_temp" in k for k in keys)  # nothing of the frozen base
    loaded = load_tuned(path, base)
    a, b = pipe.unet.unet.state_dict(), loaded.unet.unet.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(1, 4, 3, 8, 8)
    emb = base.encode_prompt("x")
    with torch.no_grad():  # same weights; CPU kernels may pick another path by memory alignment (~1e-7)
        torch.testing.assert_close(pipe.unet(x, 10, emb), loaded.unet(x, 10, emb), rtol=0, atol=1e-5)
    assert not any("attn_temp" in k for k in base.unet.state_dict())  # the base stays 2-D


def test_other_base_model_is_refused(tuned, tmp_path) -> None:
    _, pipe, cfg = tuned
    path = tmp_path / "clip.safetensors"
    save_tuned(path, pipe, trainable_modules=cfg.trainable_modules)
    other = tiny_pipeline(seed=12)  # same architecture, different weights (a "DreamBooth" of it)
    with pytest.raises(ValueError, match="another base model"):
        load_tuned(path, other)
    assert load_tuned(path, other, check_base=False) is not None


@pytest.mark.parametrize(("norm", "attention"), [("frame", "sparse_causal_self"), ("video", "frame")])
def test_every_inflation_option_survives_save_and_load(norm, attention, tmp_path) -> None:
    """A model tuned with any inflate() option loads back as that model (a sparse_causal_self file was
    once refused by its own loader)."""
    base = tiny_pipeline(seed=11)
    pipe = inflate(base, norm=norm, attention=attention, seed=3)
    path = tmp_path / "opt.safetensors"
    save_tuned(path, pipe)
    loaded = load_tuned(path, base)
    assert (loaded.unet.norm, loaded.unet.attention) == (norm, attention)
    x, emb = torch.randn(1, 4, 3, 8, 8), base.encode_prompt("x")
    with torch.no_grad():
        torch.testing.assert_close(pipe.unet(x, 10, emb), loaded.unet(x, 10, emb), rtol=0, atol=1e-5)


def test_inflated_pipeline_with_other_options_is_refused(tuned, tmp_path) -> None:
    """Weights applied to a pipeline inflated differently would silently give another model."""
    base, pipe, cfg = tuned  # norm="video", attention="sparse_causal"
    path = tmp_path / "clip.safetensors"
    save_tuned(path, pipe, trainable_modules=cfg.trainable_modules)
    other = inflate(base, attention="sparse_causal_self")
    with pytest.raises(InputError, match="tuned with norm=video, attention=sparse_causal, but this pipeline"):
        load_tuned(path, other)
    same = inflate(base)
    assert load_tuned(path, same).unet.attention == "sparse_causal"


def test_fingerprint_is_precision_independent_and_discriminative() -> None:
    a, b = tiny_pipeline(seed=1).unet, tiny_pipeline(seed=2).unet
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) == fingerprint(a.half())


def test_not_a_tuned_file_and_missing(tmp_path) -> None:
    p = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(p))
    with pytest.raises(ValueError, match="not a Tune-A-Video tuned-weights file"):
        read_metadata(p)
    with pytest.raises(FileNotFoundError):
        load_tuned(tmp_path / "nope.safetensors", tiny_pipeline())


def test_official_checkpoint_layout_loads_and_reproduces(tuned, tmp_path) -> None:
    """An official checkpoint is a whole inflated UNet state dict in diffusers + attn_temp/norm_temp keys."""
    base, pipe, _ = tuned
    official = {k: v.clone() for k, v in pipe.unet.unet.state_dict().items()}
    assert any(k.endswith("transformer_blocks.0.attn_temp.to_out.0.weight") for k in official)
    assert any(k.endswith("transformer_blocks.0.norm_temp.bias") for k in official)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(official, str(path))
    with safe_open(str(path), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    loaded = load_reference_unet(tiny_pipeline(seed=99), sd)  # architecture from any model of the shape
    x = torch.randn(1, 4, 4, 8, 8)
    emb = base.encode_prompt("y")
    with torch.no_grad():
        torch.testing.assert_close(pipe.unet(x, 300, emb), loaded.unet(x, 300, emb), rtol=0, atol=1e-5)
    sd.pop(next(iter(sd)))
    with pytest.raises(ValueError, match="missing keys"):
        load_reference_unet(base, sd)
