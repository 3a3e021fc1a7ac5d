"""A real signal moves the scores: a tiny CLIP trained here on the shapes world (about 20 s on a CPU).

Random weights would pass the formula tests with any numbers; this checks the whole chain (folder ->
loader -> preprocessing -> embeddings -> scores) on a model that has learnt something: a clip scores
higher with its own caption than with a caption of another colour and shape, and a smoothly moving
object is more consistent than a clip whose object changes every frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tav import metrics
from tav.clip_scoring import Preprocess, load_clip, preprocess
from tav.shapes import world

from .tiny_clip import save_clip_folder, tiny_clip_model

CAPTIONS = [world.caption_for([(c, s)], bg) for c in world.COLOURS for s in world.SHAPES for bg in world.BACKGROUNDS]
CLIPS = [  # (caption, path): every colour and shape, both backgrounds
    ("a red circle on a white background", "right"),
    ("a blue square on a black background", "diagonal"),
    ("a green triangle on a white background", "arc"),
    ("a yellow square on a white background", "down"),
    ("a red triangle on a black background", "left"),
    ("a blue circle on a white background", "bounce"),
]


def unrelated(caption: str) -> str:
    """The same background, another colour and another shape."""
    (colour, shape), bg = world.parse_caption(caption)[0][0], world.parse_caption(caption)[1]
    other_colour = [c for c in world.COLOURS if c != colour][0]
    other_shape = [s for s in world.SHAPES if s != shape][0]
    return world.caption_for([(other_colour, other_shape)], bg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - ScoringClip
    """Train image->caption contrastive (all 24 captions as the candidates) for 300 steps, save, load back."""
    rng = np.random.default_rng(0)
    scenes = [world.random_scene(rng) for _ in range(768)]
    images = torch.from_numpy(np.stack([world.render(s) for s in scenes]))
    labels = torch.tensor([CAPTIONS.index(s.caption) for s in scenes])
    model = tiny_clip_model(seed=0, projection_dim=32).train()
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(Path(__file__).resolve().parents[1] / "tav/assets/clip_tokenizer"))
    text = tok(CAPTIONS, padding=True, return_tensors="pt")
    pixels = preprocess(images, Preprocess(32, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only contend (10x slower on a busy 2-core machine)
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(300):
            idx = torch.randint(0, len(scenes), (64,), generator=g)
            img = torch.nn.functional.normalize(
                model.get_image_features(pixel_values=pixels[idx]).pooler_output, dim=-1
            )
            txt = torch.nn.functional.normalize(model.get_text_features(**text).pooler_output, dim=-1)
            loss = torch.nn.functional.cross_entropy(model.logit_scale.exp() * img @ txt.T, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    assert loss.item() < 1.0, f"the tiny CLIP did not learn the shapes world (loss {loss.item():.3f}; chance: 3.18)"
    folder = save_clip_folder(model.eval(), tmp_path_factory.mktemp("trained") / "shapes-clip")
    return load_clip(str(folder), torch.device("cpu"))


def test_a_clip_scores_higher_with_its_own_prompt(trained) -> None:  # noqa: ANN001
    gaps = []
    for caption, path in CLIPS:
        frames = torch.from_numpy(world.clip_from_caption(caption, (path,), n_frames=8).frames())
        own = metrics.score_edit(trained, frames, caption)
        other = metrics.score_edit(trained, frames, unrelated(caption))
        assert own.edit.text_alignment > other.edit.text_alignment, (caption, own.summary(), other.summary())
        assert own.edit.pickscore > other.edit.pickscore
        # frame by frame, not only on average
        assert all(a > b for a, b in zip(own.edit.alignment_per_frame, other.edit.alignment_per_frame, strict=True))
        gaps.append(own.edit.text_alignment - other.edit.text_alignment)
    assert np.mean(gaps) > 0.2, gaps


def test_a_moving_object_is_more_consistent_than_a_changing_one(trained) -> None:  # noqa: ANN001
    rng = np.random.default_rng(5)
    changing = torch.from_numpy(np.stack([world.render(world.random_scene(rng)) for _ in range(8)]))
    for caption, path in CLIPS:
        smooth = torch.from_numpy(world.clip_from_caption(caption, (path,), n_frames=8).frames())
        a = metrics.score_edit(trained, smooth, caption)
        b = metrics.score_edit(trained, changing, caption)
        assert a.edit.frame_consistency > b.edit.frame_consistency + 0.1, (caption, a.summary(), b.summary())
        assert a.edit.frame_consistency_consecutive > b.edit.frame_consistency_consecutive
