"""Edit scores (tav.metrics, tav.clip_scoring) on a tiny random CLIPModel folder: formulas by hand, invariances,
preprocessing against CLIPImageProcessor, progress/Cancel, and refusals of bad inputs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tav import metrics
from tav.clip_scoring import Preprocess, embed_images, load_clip, preprocess, read_config
from tav.score_plot import EDIT, SOURCE, plot
from tav.validation import InputError, TavWarning

from .tiny_clip import make_tiny_clip, save_clip_folder, tiny_clip_model

PROMPT = "a red circle on a white background"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(clip_dir: Path):  # noqa: ANN201 - ScoringClip
    return load_clip(str(clip_dir), torch.device("cpu"))


def frames(n: int = 6, h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, 3, generator=g)


# --- the formulas -------------------------------------------------------------------------------


def test_formulas_on_a_hand_example() -> None:
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])  # unnormalised on purpose
    c = 1 / math.sqrt(2)
    # ordered pairs i != j: (0,1)=0, (0,2)=c, (1,2)=c, each twice, over 3*2 pairs
    assert metrics.frame_consistency(e) == pytest.approx(4 * c / 6, abs=1e-12)
    assert metrics.consecutive_consistency(e).tolist() == pytest.approx([0.0, c], abs=1e-12)
    assert metrics.alignment(e, torch.tensor([0.0, 3.0])).tolist() == pytest.approx([0.0, 1.0, c], abs=1e-12)


def _by_hand(clip, video: torch.Tensor, prompt: str) -> dict[str, float]:  # noqa: ANN001
    """The numbers from the model's raw embeddings, with numpy loops (no tav.metrics code)."""
    with torch.no_grad():
        img = clip.model.get_image_features(pixel_values=preprocess(video, clip.preprocess)).pooler_output
        tok = clip.tokenizer([prompt], return_tensors="pt")
        txt = clip.model.get_text_features(input_ids=tok.input_ids).pooler_output[0]
    img, txt = img.double().numpy(), txt.double().numpy()
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    f = len(img)
    pairs = [cos(img[i], img[j]) for i in range(f) for j in range(f) if i != j]
    steps = [cos(img[i], img[i + 1]) for i in range(f - 1)]
    align = [cos(img[i], txt) for i in range(f)]
    scale = math.exp(float(clip.model.logit_scale))
    return {
        "frame_consistency": sum(pairs) / len(pairs),
        "frame_consistency_consecutive": sum(steps) / len(steps),
        "text_alignment": sum(align) / f,
        "pickscore": scale * sum(align) / f,
    }


def test_scores_match_a_hand_computation(clip) -> None:  # noqa: ANN001
    video = frames()
    s = metrics.score_edit(clip, video, PROMPT, batch_size=4)
    hand = _by_hand(clip, video, PROMPT)
    for key, value in hand.items():
        assert getattr(s.edit, key) == pytest.approx(value, abs=1e-5), key
    assert s.logit_scale == pytest.approx(math.exp(float(clip.model.logit_scale)), rel=1e-6)
    assert s.edit.text_alignment == pytest.approx(np.mean(s.edit.alignment_per_frame), abs=1e-12)
    assert len(s.edit.consistency_per_step) == len(video) - 1


def test_identical_frames_are_perfectly_consistent(clip) -> None:  # noqa: ANN001
    s = metrics.score_edit(clip, frames(1).expand(5, -1, -1, -1), PROMPT)
    assert s.edit.frame_consistency == pytest.approx(1.0, abs=1e-6)
    assert s.edit.frame_consistency_consecutive == pytest.approx(1.0, abs=1e-6)


def test_reversing_the_frames_keeps_consistency(clip) -> None:  # noqa: ANN001
    video = frames(7)
    a = metrics.score_edit(clip, video, PROMPT)
    b = metrics.score_edit(clip, video.flip(0), PROMPT)
    assert b.edit.frame_consistency == pytest.approx(a.edit.frame_consistency, abs=1e-6)
    assert b.edit.frame_consistency_consecutive == pytest.approx(a.edit.frame_consistency_consecutive, abs=1e-6)
    assert b.edit.consistency_per_step == pytest.approx(a.edit.consistency_per_step[::-1], abs=1e-6)
    # order matters for the consecutive score: a shuffle changes it (the all-pairs mean does not move)
    c = metrics.score_edit(clip, video[[0, 3, 1, 5, 2, 6, 4]], PROMPT)
    assert c.edit.frame_consistency == pytest.approx(a.edit.frame_consistency, abs=1e-6)
    assert c.edit.frame_consistency_consecutive != pytest.approx(a.edit.frame_consistency_consecutive, abs=1e-4)


def test_alignment_is_the_mean_over_frames(clip) -> None:  # noqa: ANN001
    video = frames(3)
    per = [metrics.score_edit(clip, video[i : i + 1].expand(2, -1, -1, -1), PROMPT) for i in range(3)]
    whole = metrics.score_edit(clip, video, PROMPT)
    assert whole.edit.text_alignment == pytest.approx(np.mean([p.edit.text_alignment for p in per]), abs=1e-6)
    assert whole.edit.pickscore == pytest.approx(np.mean([p.edit.pickscore for p in per]), abs=1e-4)


def test_batch_size_does_not_change_the_scores(clip) -> None:  # noqa: ANN001
    video = frames(7)
    a = metrics.score_edit(clip, video, PROMPT, batch_size=1)
    b = metrics.score_edit(clip, video, PROMPT, batch_size=3)
    assert a.edit.alignment_per_frame == pytest.approx(b.edit.alignment_per_frame, abs=1e-6)
    assert a.edit.consistency_per_step == pytest.approx(b.edit.consistency_per_step, abs=1e-6)


def test_source_scores(clip) -> None:  # noqa: ANN001
    edit, src = frames(4, seed=1), frames(4, seed=2)
    s = metrics.score_edit(clip, edit, PROMPT, src)
    alone = metrics.score_edit(clip, src, PROMPT)
    assert s.source.text_alignment == pytest.approx(alone.edit.text_alignment, abs=1e-6)
    assert s.source.frame_consistency == pytest.approx(alone.edit.frame_consistency, abs=1e-6)
    assert s.source_similarity < 1.0
    assert metrics.score_edit(clip, edit, PROMPT, edit).source_similarity == pytest.approx(1.0, abs=1e-6)
    text = s.summary()
    assert "source: frame consistency" in text and f"{100 * s.edit.frame_consistency:.2f}" in text
    json.dumps(s.to_dict())  # the CLI's --json and the node's UI


def test_a_consistency_embedder_replaces_the_image_tower_for_consistency_only(clip) -> None:  # noqa: ANN001
    video = frames(4)
    fixed = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]]), dim=-1)
    s = metrics.score_edit(clip, video, PROMPT, consistency_embedder=lambda f: fixed, consistency_model="x")
    plain = metrics.score_edit(clip, video, PROMPT)
    assert s.edit.frame_consistency == pytest.approx((2 * 2) / 12, abs=1e-9)  # pairs (0,1) and (2,3) in both orders
    assert s.edit.consistency_per_step == pytest.approx([1.0, 0.0, 1.0], abs=1e-9)
    assert s.edit.alignment_per_frame == pytest.approx(plain.edit.alignment_per_frame, abs=1e-9)
    assert "frame consistency from x" in s.summary()


def test_batched_embedder_feeds_every_frame_once_in_order() -> None:
    seen: list[int] = []

    def encode(f: torch.Tensor) -> torch.Tensor:
        seen.append(len(f))
        return f.mean(dim=(1, 2)).double() * 3  # [n, 3], unnormalised, not float32

    video = frames(7)
    emb = metrics.batched(encode, 3)(video)
    assert seen == [3, 3, 1]
    assert emb.dtype == torch.float32
    assert torch.allclose(emb, torch.nn.functional.normalize(video.mean(dim=(1, 2)), dim=-1), atol=1e-6)


# --- preprocessing as CLIPImageProcessor ------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(180, 320), (300, 160), (224, 224), (64, 64)], ids=["wide", "tall", "same", "up"])
def test_preprocessing_matches_clip_image_processor(tmp_path: Path, h: int, w: int) -> None:
    from transformers import CLIPImageProcessor

    cfg = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 224},
           "crop_size": {"height": 224, "width": 224}, "do_resize": True, "do_center_crop": True,
           "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "resample": 3,
           "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}  # fmt: skip
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
    processor = CLIPImageProcessor.from_pretrained(str(tmp_path), local_files_only=True)
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(
        torch.rand(2, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear"
    )
    uint8 = (smooth.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    want = processor(images=list(uint8.numpy()), return_tensors="pt").pixel_values
    pp = Preprocess(224, 224)
    got = preprocess(uint8.float() / 255, pp)
    assert got.shape == want.shape
    # the same 8-bit pipeline: torchvision's fixed-point uint8 kernel rounds some pixels the other way, so at
    # most one grey level apart (/ std ~ 0.015), and most pixels identical
    levels = ((got - want) * torch.tensor(pp.std).view(1, 3, 1, 1) * 255).abs()
    assert levels.max() < 1.01, float(levels.max())
    assert levels.mean() < 0.35, float(levels.mean())


def test_preprocess_settings_come_from_the_folder(tmp_path: Path, clip_dir: Path) -> None:
    folder = shutil.copytree(clip_dir, tmp_path / "c")
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"shortest_edge": 40},
                "crop_size": {"height": 36, "width": 36},
                "image_mean": [0.5] * 3,
                "image_std": [0.25] * 3,
            }
        )  # fmt: skip
    )
    loaded = load_clip(str(folder), torch.device("cpu"))
    assert loaded.preprocess == Preprocess(40, 36, (0.5,) * 3, (0.25,) * 3)
    assert load_clip(str(clip_dir), torch.device("cpu")).preprocess == Preprocess(32, 32)  # the tower's size


# --- progress, Cancel, warnings, plot ---------------------------------------------------------------


def test_progress_counts_frames_and_cancel_stops_the_batches(clip) -> None:  # noqa: ANN001
    seen: list[tuple[int, int]] = []
    metrics.score_edit(
        clip, frames(5), PROMPT, frames(5, seed=3), batch_size=2, callback=lambda s, t: seen.append((s, t))
    )
    assert seen == [(2, 10), (4, 10), (5, 10), (7, 10), (9, 10), (10, 10)]

    class Cancelled(Exception):
        pass

    calls = []

    def cancel(step: int, total: int) -> None:
        calls.append(step)
        raise Cancelled

    with pytest.raises(Cancelled):
        metrics.score_edit(clip, frames(8), PROMPT, batch_size=2, callback=cancel)
    assert calls == [2]


def test_a_long_prompt_warns_that_it_was_truncated(clip) -> None:  # noqa: ANN001
    with pytest.warns(TavWarning, match="ignored the end"):
        metrics.score_edit(clip, frames(2), "a red circle on a white background " * 12 + "LAST")


def test_plot_draws_the_source_only_when_given(clip) -> None:  # noqa: ANN001
    edit = metrics.score_edit(clip, frames(4), PROMPT)
    both = metrics.score_edit(clip, frames(4), PROMPT, frames(4, seed=9))

    def has(img: np.ndarray, colour: tuple) -> bool:
        return bool((img == np.array(colour, dtype=np.uint8)).all(-1).any())

    a, b = plot(edit), plot(both)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert has(a, EDIT) and not has(a, SOURCE)
    assert has(b, EDIT) and has(b, SOURCE)


# --- refusals ------------------------------------------------------------------------------------


def test_bad_folders_are_refused_with_what_to_do(tmp_path: Path, clip_dir: Path) -> None:
    with pytest.raises(InputError, match="CLIP model folder not found"):
        read_config(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no config.json"):
        read_config(str(tmp_path / "empty"))
    text_only = tiny_clip_model().text_model
    from transformers import CLIPTextModel

    tm = CLIPTextModel(tiny_clip_model().config.text_config)
    tm.load_state_dict(text_only.state_dict(), strict=False)
    tm.save_pretrained(tmp_path / "text", safe_serialization=True)
    with pytest.raises(InputError, match="'clip_text_model' model, not a CLIPModel"):
        read_config(str(tmp_path / "text"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(clip_dir / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"never read")
    with pytest.raises(InputError, match="only pytorch_model.bin .a pickle, which is never loaded"):
        read_config(str(pickled))
    (pickled / "pytorch_model.bin").unlink()
    with pytest.raises(InputError, match="has no model.safetensors"):
        read_config(str(pickled))
    (pickled / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        read_config(str(pickled))


def test_a_corrupt_weights_file_is_one_clear_error(tmp_path: Path, clip_dir: Path) -> None:
    folder = shutil.copytree(clip_dir, tmp_path / "c")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="cannot load the CLIP model"):
        load_clip(str(folder), torch.device("cpu"))


def test_the_tokenizer_falls_back_to_the_bundled_one(tmp_path: Path) -> None:
    folder = save_clip_folder(tiny_clip_model(), tmp_path / "no-tok", tokenizer=False)
    loaded = load_clip(str(folder), torch.device("cpu"))
    assert loaded.tokenizer("a red circle").input_ids[0] == 49406


@pytest.mark.parametrize(
    ("edit", "source", "prompt", "message"),
    [
        (torch.zeros(0, 32, 32, 3), None, PROMPT, r"has 0 frame\(s\): frame consistency needs at least 2"),
        (torch.zeros(1, 32, 32, 3), None, PROMPT, r"has 1 frame\(s\)"),
        (torch.zeros(4, 32, 32), None, PROMPT, r"expected frames shaped"),
        (torch.zeros(4, 32, 32, 3), torch.zeros(3, 32, 32, 3), PROMPT, r"source clip has 3 frames but the edit has 4"),
        (torch.zeros(4, 32, 32, 3), None, "   ", r"prompt to score against is empty"),
    ],
    ids=["empty-clip", "one-frame", "not-frames", "frame-count-mismatch", "empty-prompt"],
)
def test_bad_inputs_are_refused(clip, edit, source, prompt, message) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=message):
        metrics.score_edit(clip, edit, prompt, source)


def test_embed_images_on_the_models_dtype(clip_dir: Path) -> None:
    half = load_clip(str(clip_dir), torch.device("cpu"), dtype=torch.bfloat16)
    emb = embed_images(half, frames(3))
    assert emb.dtype == torch.float32 and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    full = embed_images(load_clip(str(clip_dir), torch.device("cpu")), frames(3))
    assert (emb * full).sum(-1).min() > 0.99  # bf16 rounding only
