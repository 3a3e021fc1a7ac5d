"""Tuned-weights files and official Tune-A-Video checkpoints."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tav.inflation import inflate, load_reference_unet
from tav.tuning import DEFAULT_TRAINABLE, TuneConfig, trainable_names, tune
from tav.validation import InputError
from tav.weights import base_fingerprint, fingerprint, load_latents, load_tuned, read_metadata, save_latents, save_tuned

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


def _rewrite(src, dst, *, meta=None, drop=(), tensors=None):  # noqa: ANN001, ANN202
    """A copy of a tuned file with metadata keys changed (None removes one) and tensors replaced."""
    with safe_open(str(src), "pt") as f:
        old_meta = f.metadata()
        old = {k: f.get_tensor(k) for k in f.keys()}
    new_meta = {k: v for k, v in {**old_meta, **(meta or {})}.items() if v is not None and k not in drop}
    save_file(old if tensors is None else tensors, str(dst), metadata=new_meta)
    return dst


@pytest.mark.parametrize(
    ("meta", "drop", "message"),
    [
        ({}, ("base_fingerprint",), r"lacks the metadata base_fingerprint: it is damaged or hand-made; re-save it"),
        ({}, ("norm", "attention"), r"lacks the metadata norm, attention"),
        ({"trainable_modules": '"attn1.to_q"'}, (), r"metadata trainable_modules is not a JSON list of names"),
        ({"trainable_modules": "[1]"}, (), r"metadata trainable_modules is not a JSON list of names"),
        ({"trainable_modules": "attn1"}, (), r"metadata trainable_modules is not a JSON list of names"),
        ({"frames": "3.5"}, (), r"metadata frames='3.5' is not a whole number; re-save the file"),
        ({"width": "-64"}, (), r"metadata width='-64' is not a whole number"),
        ({"norm": "batch"}, (), r"unknown norm/attention 'batch'/'sparse_causal' in its metadata \(this version knows "
         r"norm video/frame, attention sparse_causal/sparse_causal_self/frame\); it was saved by a newer version"),
        ({"attention": "full"}, (), r"unknown norm/attention 'video'/'full'"),
    ],
)  # fmt: skip
def test_damaged_metadata_is_refused_with_what_to_do(tuned, tmp_path, meta, drop, message) -> None:
    _, pipe, _ = tuned
    good = tmp_path / "good.safetensors"
    save_tuned(good, pipe)
    bad = _rewrite(good, tmp_path / "bad.safetensors", meta=meta, drop=drop)
    with pytest.raises(InputError, match=message):
        read_metadata(bad)


def test_damaged_tensors_are_refused_with_what_to_do(tuned, tmp_path) -> None:
    base, pipe, _ = tuned
    good = tmp_path / "good.safetensors"
    save_tuned(good, pipe)
    with safe_open(str(good), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = sorted(tensors)[0]
    cases = [
        ({}, r"hold no tensors: re-save them"),
        (
            {**tensors, "extra.weight": torch.zeros(2)},
            r"holds tensors this UNet does not have, e.g. \['extra.weight'\]",
        ),
        ({**tensors, key: torch.zeros(2)}, rf"{key} has shape \(2,\), model has \({tensors[key].shape[0]}, "),
        ({**tensors, key: torch.full_like(tensors[key], float("nan"))}, r"holds NaN values.*the file is corrupted"),
    ]
    for i, (bad_tensors, message) in enumerate(cases):
        bad = _rewrite(good, tmp_path / f"bad{i}.safetensors", tensors=bad_tensors)
        with pytest.raises(ValueError, match=message):  # InputError, or NonFiniteError for NaN
            load_tuned(bad, base)
    other = tiny_pipeline(seed=12).replace(source="my-dreambooth.safetensors")
    with pytest.raises(ValueError, match=rf"fingerprint [0-9a-f]{{16}}, source {pipe.source}\), but this model's fingerprint is "
                       r"[0-9a-f]{16} \(my-dreambooth.safetensors\)\. Load the checkpoint they were tuned from"):  # fmt: skip
        load_tuned(good, other)


def test_saved_metadata_comes_from_the_tuning_unless_overridden(tuned, tmp_path) -> None:
    """What tune() recorded (caption, frames, size, modules) is saved and comes back as the loaded info."""
    base, _, _ = tuned
    video = inflate(base)
    latents = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    cfg = TuneConfig(steps=1, trainable_modules=["attn_temp", "attn1.to_q"])
    pipe = tune(video, latents, base.encode_prompt("a cat"), cfg, prompt="a cat walks").pipeline
    meta = save_tuned(tmp_path / "a.safetensors", pipe, extra={"fps": "8"})
    assert {k: meta[k] for k in ("prompt", "frames", "height", "width", "trainable_modules", "fps")} == {
        "prompt": "a cat walks", "frames": "3", "height": "64", "width": "64",
        "trainable_modules": '["attn_temp", "attn1.to_q"]', "fps": "8",
    }  # fmt: skip
    assert (meta["format"], meta["norm"], meta["attention"], meta["prediction_type"]) == (
        "tav-tuned/1", "video", "sparse_causal", "epsilon",
    )  # fmt: skip
    assert meta["base_source"] == (base.source or "") and meta["tav_version"]
    loaded = load_tuned(tmp_path / "a.safetensors", base)
    assert loaded.info == {
        "prompt": "a cat walks", "trainable_modules": ["attn_temp", "attn1.to_q"], "frames": 3, "height": 64, "width": 64,
    }  # fmt: skip
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        assert set(f.keys()) == set(trainable_names(pipe.unet.unet, cfg.trainable_modules)) | {
            k for k in pipe.unet.unet.state_dict() if "_temp." in k
        }
    over = save_tuned(
        tmp_path / "b.safetensors", pipe, prompt="", frames=8, height=32, width=48, trainable_modules=["attn_temp"]
    )
    assert (over["prompt"], over["frames"], over["height"], over["width"]) == ("", "8", "32", "48")
    assert json.loads(over["trainable_modules"]) == ["attn_temp"]
    with pytest.raises(ValueError, match=r"save_tuned\(\) needs an inflated \(and tuned\) pipeline"):
        save_tuned(tmp_path / "c.safetensors", base)


def test_fingerprint_covers_names_shapes_and_the_whole_of_each_tensor() -> None:
    big = torch.arange(100_000, dtype=torch.float32) / 1e5
    fp = fingerprint(torch.nn.ParameterDict({"w": torch.nn.Parameter(big)}))
    late = big.clone()
    late[48_000] += 0.5  # on the strided sample (every 24th value), far past the first 4096
    assert fingerprint(torch.nn.ParameterDict({"w": torch.nn.Parameter(late)})) != fp
    assert fingerprint(torch.nn.ParameterDict({"v": torch.nn.Parameter(big)})) != fp
    assert fingerprint(torch.nn.ParameterDict({"w": torch.nn.Parameter(big.view(1000, 100))})) != fp
    base = tiny_pipeline(seed=11)
    assert fingerprint(inflate(base).unet) == fingerprint(base.unet)  # the temporal layers are not the base
    assert base_fingerprint(base.replace(base_fingerprint="0123456789abcdef")) == "0123456789abcdef"


def test_latents_files_round_trip_and_refuse_damage(tmp_path) -> None:
    lat = torch.randn(1, 4, 3, 8, 8)
    good = tmp_path / "l.safetensors"
    save_latents(good, lat.double(), {"fps": "8", "steps": "50"})
    got, meta = load_latents(good)
    assert got.dtype == torch.float32 and torch.equal(got, lat.double().float())
    assert meta == {"format": "tav-latents/1", "fps": "8", "steps": "50"}
    cases = [
        ({"latents": lat}, {"format": "tav-tuned/1"}, r"is not a latents file \(format 'tav-tuned/1'\); pass the file written by `python -m tav invert`$"),
        ({"other": lat}, {"format": "tav-latents/1"}, r"has no 'latents' tensor: it is damaged"),
        ({"latents": lat[0]}, {"format": "tav-latents/1"}, r"latents must be one video \[1, C, frames, h, w\], got shape \(4, 3, 8, 8\)"),
        ({"latents": lat.repeat(2, 1, 1, 1, 1)}, {"format": "tav-latents/1"}, r"got shape \(2, 4, 3, 8, 8\)"),
        ({"latents": lat.long()}, {"format": "tav-latents/1"}, r"latents must be one video"),
        ({"latents": lat * float("inf")}, {"format": "tav-latents/1"}, r"^latents file '.*bad5\.safetensors' holds (infinite|NaN) values; the file is corrupted; re-run invert$"),
        ({"latents": lat}, {"format": "tav-latents/1", "fps": "abc"}, r"metadata fps='abc' is not a positive number"),
        ({"latents": lat}, {"format": "tav-latents/1", "steps": "0"}, r"metadata steps='0' is not a positive number"),
        ({"latents": lat}, {"format": "tav-latents/1", "fps": "1e9"}, r"metadata fps='1e9'"),
    ]  # fmt: skip
    for i, (tensors, meta, message) in enumerate(cases):
        save_file(tensors, str(tmp_path / f"bad{i}.safetensors"), metadata=meta)
        with pytest.raises(ValueError, match=message):
            load_latents(tmp_path / f"bad{i}.safetensors")
    (tmp_path / "text.safetensors").write_text("not a safetensors file")
    with pytest.raises(InputError, match=r"latents file .*text.safetensors' is not a readable \.safetensors file \(.*\): "
                       r"it may be truncated or not a safetensors file at all; re-create it"):  # fmt: skip
        load_latents(tmp_path / "text.safetensors")
    with pytest.raises(ValueError, match="the inverted latents holds NaN values; nothing was saved"):
        save_latents(tmp_path / "n.safetensors", torch.full((1, 4, 1, 2, 2), float("nan")))
    assert not (tmp_path / "n.safetensors").exists()


def test_whole_messages_for_files_that_are_missing_unreadable_or_of_another_kind(tuned, tmp_path) -> None:
    """Each refusal names the file and the cure, in full (anchored: nothing dropped or added)."""
    base, pipe, _ = tuned
    with pytest.raises(FileNotFoundError, match=r"^tuned weights not found: .*nope\.safetensors$"):
        read_metadata(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match=r"^latents file not found: .*nope\.safetensors$"):
        load_latents(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    for reader in (read_metadata, lambda p: load_tuned(p, base)):
        with pytest.raises(InputError) as err:
            reader(junk)
        text = str(err.value)
        assert text.startswith(f"tuned weights {str(junk)!r} is not a readable .safetensors file (")
        reason = text.split("(", 1)[1].split("): it may be truncated", 1)[0]
        with pytest.raises(Exception) as raw:  # what safetensors itself says, first line
            safe_open(str(junk), "pt")
        assert reason == str(raw.value).strip().splitlines()[0][:200]
        assert text.endswith("): it may be truncated or not a safetensors file at all; re-create it")
    other = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(1)}, str(other), metadata={"format": "x/1"})
    with pytest.raises(InputError, match=r"^.*other\.safetensors is not a Tune-A-Video tuned-weights file \(format "
                       r"'x/1', expected 'tav-tuned/1'\); pass a file written by `tune` / Save Tuned \(official full "
                       r"checkpoints load as --model instead\)$"):  # fmt: skip
        read_metadata(other)
    good = tmp_path / "good.safetensors"
    save_tuned(good, pipe)
    with pytest.raises(InputError, match=r"^.*bad\.safetensors: metadata height='64px' is not a whole number; re-save"):
        read_metadata(_rewrite(good, tmp_path / "bad.safetensors", meta={"height": "64px"}))
    with pytest.raises(ValueError, match=r"^save_tuned\(\) needs an inflated \(and tuned\) pipeline$"):
        save_tuned(tmp_path / "c.safetensors", base)


def test_refusals_that_name_the_models_and_options(tuned, tmp_path) -> None:
    base, pipe, _ = tuned
    path = tmp_path / "t.safetensors"
    save_tuned(path, pipe)
    anonymous = _rewrite(path, tmp_path / "anon.safetensors", meta={"base_source": ""})
    with pytest.raises(ValueError, match=r"\(fingerprint [0-9a-f]{16}, source unknown\), but this model's fingerprint "
                       r"is [0-9a-f]{16} \(unknown source\)\. Load the checkpoint they were tuned from\.$"):  # fmt: skip
        load_tuned(anonymous, tiny_pipeline(seed=12).replace(source=""))
    with pytest.raises(InputError, match=r"but this pipeline is inflated with norm=frame, attention=sparse_causal; load "
                       r"the weights onto the 2-D pipeline \(they inflate it as they were tuned\) or inflate with the "
                       r"same options$"):  # fmt: skip
        load_tuned(path, inflate(base, norm="frame"))
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    extra = {**tensors, **{f"extra{i}.weight": torch.zeros(1) for i in range(4)}}
    with pytest.raises(InputError, match=r"e\.g\. \['extra0\.weight', 'extra1\.weight', 'extra2\.weight'\]: wrong "
                       r"architecture$"):  # fmt: skip
        load_tuned(_rewrite(path, tmp_path / "x.safetensors", tensors=extra), base)
    key = sorted(tensors)[0]
    nan = {**tensors, key: torch.full_like(tensors[key], float("nan"))}
    with pytest.raises(ValueError, match=rf"^tuned weights '.*n\.safetensors': tensor '{key}' holds NaN values; the "
                       r"file is corrupted; re-run Tune or re-copy it$"):  # fmt: skip
        load_tuned(_rewrite(path, tmp_path / "n.safetensors", tensors=nan), base)
    bad = inflate(base)
    with torch.no_grad():
        next(p for n, p in bad.unet.unet.named_parameters() if "attn_temp" in n).fill_(float("inf"))
    with pytest.raises(ValueError, match=r"^the tuned model: tensor '.*attn_temp.*' holds infinite values; nothing was "
                       r"saved; tuning diverged, lower the learning rate$"):  # fmt: skip
        save_tuned(tmp_path / "inf.safetensors", bad)
    assert not (tmp_path / "inf.safetensors").exists()


def test_a_file_with_only_the_required_metadata_loads_with_empty_defaults(tuned, tmp_path) -> None:
    base, _, _ = tuned
    untuned = inflate(base)  # never tuned: no caption, frames or size recorded
    path = tmp_path / "u.safetensors"
    meta = save_tuned(path, untuned)
    assert (meta["prompt"], meta["frames"], meta["height"], meta["width"]) == ("", "0", "0", "0")
    keep = ("format", "base_fingerprint", "trainable_modules", "norm", "attention")
    bare = _rewrite(path, tmp_path / "bare.safetensors", drop=[k for k in meta if k not in keep])
    info = load_tuned(bare, base).info
    assert info == {"prompt": "", "trainable_modules": list(DEFAULT_TRAINABLE), "frames": 0, "height": 0, "width": 0}
    assert base_fingerprint(base.replace(base_fingerprint="")) == fingerprint(base.unet)


def test_latents_metadata_bounds(tmp_path) -> None:
    """fps and steps must be positive and below a million; a slow-motion fps of 0.5 is fine."""
    lat = torch.zeros(1, 4, 1, 2, 2)
    for value, ok in (("0.5", True), ("999999", True), ("1e6", False), ("nan", False), ("-8", False)):
        path = tmp_path / f"l{value}.safetensors"
        save_latents(path, lat, {"fps": value})
        if ok:
            assert load_latents(path)[1]["fps"] == value
        else:
            with pytest.raises(InputError, match=rf"metadata fps='{value}' is not a positive number; re-run invert$"):
                load_latents(path)


def test_fingerprint_samples_every_value_of_a_small_tensor() -> None:
    small = torch.zeros(1000)
    changed = small.clone()
    changed[501] = 1.0  # odd index: a sample of every other value would miss it
    a = fingerprint(torch.nn.ParameterDict({"w": torch.nn.Parameter(small)}))
    assert fingerprint(torch.nn.ParameterDict({"w": torch.nn.Parameter(changed)})) != a


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda data: data[: len(data) // 2], r"\(\d+ of \d+ bytes on disk\)"),
        (lambda data: data.replace(b'"latents"', b'"latentz"'), r"\(the tensor names differ from what was saved\)"),
    ],
)
def test_a_write_that_does_not_read_back_never_replaces_the_file(tmp_path, monkeypatch, damage, why) -> None:
    """Bytes that reach the disk short, or changed, are caught before the rename: the old file stays."""
    from tav import weights

    target = tmp_path / "l.safetensors"
    target.write_bytes(b"EXISTING")
    real = weights._write_file
    monkeypatch.setattr(weights, "_write_file", lambda path, data: real(path, damage(data)))
    with pytest.raises(OSError, match=rf"does not read back {why}"):
        save_latents(target, torch.zeros(1, 4, 1, 2, 2))
    assert target.read_bytes() == b"EXISTING" and sorted(p.name for p in tmp_path.iterdir()) == ["l.safetensors"]


def test_a_file_that_opens_but_whose_tensors_cannot_be_read(tuned, tmp_path, monkeypatch) -> None:
    """A file damaged past its header: the header reads, a tensor does not. One line, with the cure."""
    from safetensors import SafetensorError

    from tav import weights

    base, pipe, _ = tuned
    tuned_path, latents_path = tmp_path / "t.safetensors", tmp_path / "l.safetensors"
    save_tuned(tuned_path, pipe)
    save_latents(latents_path, torch.zeros(1, 4, 1, 2, 2))
    real, names = weights._open, []

    class Damaged:
        def __init__(self, handle) -> None:  # noqa: ANN001
            self.handle = handle

        def __enter__(self):  # noqa: ANN204
            self.inner = self.handle.__enter__()
            return self

        def __exit__(self, *exc) -> None:  # noqa: ANN002
            self.handle.__exit__(*exc)

        def metadata(self):  # noqa: ANN201
            return self.inner.metadata()

        def keys(self):  # noqa: ANN201
            return self.inner.keys()

        def get_tensor(self, key: str) -> torch.Tensor:
            raise SafetensorError("data out of bounds\nsecond line")

    def damaged_open(path: str, what: str):  # noqa: ANN202
        names.append(what)
        return Damaged(real(path, what))

    monkeypatch.setattr(weights, "_open", damaged_open)
    with pytest.raises(
        InputError, match=r"^tuned weights '.*t\.safetensors' cannot be read \(data out of bounds\): re-save them$"
    ):
        load_tuned(tuned_path, base)
    assert names == ["tuned weights", "tuned weights"]  # the name a failed open would show
    with pytest.raises(
        InputError, match=r"^.*l\.safetensors: the latents tensor cannot be read \(data out of bounds\); re-run invert$"
    ):
        load_latents(latents_path)


def test_first_line_of_an_error_is_short_and_never_empty() -> None:
    from tav.weights import _first_line

    assert _first_line(ValueError("x" * 300)) == "x" * 200
    assert _first_line(ValueError("  first\nsecond")) == "first"
    assert _first_line(OSError()) == "OSError"
