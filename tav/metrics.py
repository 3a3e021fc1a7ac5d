"""Score an edit as the paper (Tab. 1) and LOVEU-TGVE 2023 do: CLIP frame consistency, textual alignment, PickScore.

Definitions (docs/metrics.md has the sources and what is uncertain), on unit-norm CLIP embeddings
``e_i`` of the ``F`` frames and ``t`` of the edit prompt:

- ``frame_consistency``: mean cosine over all ordered pairs ``i != j`` — the paper's text ("average
  cosine similarity between all pairs of video frames") and LOVEU-TGVE's ``clip_score_frame``
  (cosine matrix, diagonal zeroed, divided by ``F(F-1)``);
- ``frame_consistency_consecutive``: mean of ``cos(e_i, e_{i+1})`` — what several later papers call
  "CLIP-Image"; it is the per-frame curve the plot draws;
- ``text_alignment``: mean over frames of ``cos(e_i, t)``. The paper and LOVEU-TGVE report
  ``logit_scale * cos`` ("CLIP score"), which is ``100 * cos`` for OpenAI's CLIP;
- ``pickscore``: mean over frames of ``logit_scale * cos(e_i, t)``, as PickScore's model card and
  LOVEU-TGVE compute it with the PickScore_v1 model. With another CLIP this is the same formula with
  that model's ``logit_scale`` (``100 * text_alignment`` for OpenAI's CLIP), not PickScore.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

import torch

from .clip_scoring import ScoringClip, embed_images, embed_text
from .progress import ProgressFn
from .validation import InputError

#: embeds ``[F, H, W, 3]`` frames to unit-norm ``[F, D]`` for frame consistency only (e.g. ComfyUI's CLIP_VISION)
ImageEmbedder = Callable[[torch.Tensor], torch.Tensor]


def batched(encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> ImageEmbedder:
    """An :data:`ImageEmbedder` from any image encoder (ComfyUI's ``CLIP_VISION.encode_image``): ``batch_size``
    frames at a time, unit-norm float32 on the CPU."""

    def embed(frames: torch.Tensor) -> torch.Tensor:
        out = [encode(frames[i : i + batch_size]).float().cpu() for i in range(0, len(frames), batch_size)]
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    return embed


def cosine_matrix(emb: torch.Tensor) -> torch.Tensor:
    """``[F, F]`` cosines of the rows of ``emb`` (normalised here, so any scale works)."""
    e = torch.nn.functional.normalize(emb.double(), dim=-1)
    return e @ e.T


def frame_consistency(emb: torch.Tensor) -> float:
    """Mean cosine over all pairs ``i != j`` (the paper and LOVEU-TGVE)."""
    f = emb.shape[0]
    sim = cosine_matrix(emb)
    return float((sim.sum() - sim.diagonal().sum()) / (f * (f - 1)))


def consecutive_consistency(emb: torch.Tensor) -> torch.Tensor:
    """``cos(e_i, e_{i+1})`` for ``i = 0 .. F-2``."""
    return cosine_matrix(emb).diagonal(offset=1)


def alignment(emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Per-frame ``cos(e_i, t)``."""
    e = torch.nn.functional.normalize(emb.double(), dim=-1)
    return e @ torch.nn.functional.normalize(text.double(), dim=-1)


@dataclasses.dataclass
class VideoScores:
    """The numbers of one clip against one prompt, and the per-frame curves they are means of."""

    frame_consistency: float
    frame_consistency_consecutive: float
    text_alignment: float
    pickscore: float
    alignment_per_frame: list[float]
    consistency_per_step: list[float]  # frame i -> i+1


@dataclasses.dataclass
class EditScores:
    """An edit's scores; with the source clip, the source's against the same prompt and the frame-by-frame
    similarity of edit and source (how much of the source's look the edit kept)."""

    edit: VideoScores
    prompt: str
    model: str
    logit_scale: float
    source: Optional[VideoScores] = None
    source_similarity: Optional[float] = None
    consistency_model: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """Readable lines: the numbers, then the paper's scale (x100), for the CLI and the node."""
        e = self.edit
        lines = [
            f"CLIP model: {self.model} (logit_scale {self.logit_scale:.4g})"
            + (f"; frame consistency from {self.consistency_model}" if self.consistency_model else ""),
            f"frames: {len(e.alignment_per_frame)}   prompt: {self.prompt!r}",
            f"frame consistency (all pairs):   {e.frame_consistency:.4f}",
            f"frame consistency (consecutive): {e.frame_consistency_consecutive:.4f}",
            f"text alignment (mean cos):       {e.text_alignment:.4f}",
            f"PickScore-style (scale x cos):   {e.pickscore:.3f}",
        ]
        if self.source is not None:
            s = self.source
            lines += [
                f"source: frame consistency {s.frame_consistency:.4f} (consecutive "
                f"{s.frame_consistency_consecutive:.4f}), text alignment {s.text_alignment:.4f}, "
                f"PickScore-style {s.pickscore:.3f}",
                f"edit vs source, same frame (mean cos): {self.source_similarity:.4f}",
            ]
        lines.append(
            f"paper's Tab. 1 scale: consistency {100 * e.frame_consistency:.2f}, "
            f"textual faithfulness {100 * e.text_alignment:.2f}"
        )
        return "\n".join(lines)


def video_scores(
    emb: torch.Tensor, text: torch.Tensor, logit_scale: float, consistency_emb: torch.Tensor
) -> VideoScores:
    """All numbers of one clip from its embeddings (``consistency_emb``: the ones frame consistency uses)."""
    align = alignment(emb, text)
    steps = consecutive_consistency(consistency_emb)
    return VideoScores(
        frame_consistency=frame_consistency(consistency_emb),
        frame_consistency_consecutive=float(steps.mean()),
        text_alignment=float(align.mean()),
        pickscore=float(logit_scale * align.mean()),
        alignment_per_frame=[float(a) for a in align],
        consistency_per_step=[float(c) for c in steps],
    )


def check_frames(frames: Any, what: str) -> None:
    """A clip the metrics can score: ``[F, H, W, 3|4]`` with ``F >= 2`` (consistency needs a pair of frames)."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise InputError(f"{what}: expected frames shaped [frames, height, width, 3], got {shape}")
    if frames.shape[0] < 2:
        raise InputError(f"{what} has {frames.shape[0]} frame(s): frame consistency needs at least 2")


def check_inputs(frames: Any, prompt: Any, source: Any = None) -> None:
    """Everything :func:`score_edit` needs of its inputs, checked before a model is loaded."""
    check_frames(frames, "the edited clip")
    if source is not None:
        check_frames(source, "the source clip")
        if source.shape[0] != frames.shape[0]:
            raise InputError(
                f"the source clip has {source.shape[0]} frames but the edit has {frames.shape[0]}: pass the frames "
                "the edit was made from (same count, same order)"
            )
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt to score against is empty: pass the edit prompt")


def score_edit(
    clip: ScoringClip,
    frames: torch.Tensor,
    prompt: str,
    source: Optional[torch.Tensor] = None,
    *,
    batch_size: int = 16,
    callback: Optional[ProgressFn] = None,
    consistency_embedder: Optional[ImageEmbedder] = None,
    consistency_model: Optional[str] = None,
) -> EditScores:
    """Score ``frames`` (the edit, ``[F, H, W, 3]`` in 0..1) against ``prompt``, and ``source`` when given.

    ``consistency_embedder`` replaces the CLIP model's image tower for frame consistency only (text
    alignment needs the text tower of the same model). ``callback(frames embedded, total)``."""
    check_inputs(frames, prompt, source)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    clips = [frames] if source is None else [frames, source]
    total = sum(len(c) for c in clips)
    embs, done = [], 0
    for c in clips:
        embs.append(embed_images(clip, c, batch_size, callback, done, total))
        done += len(c)
    text = embed_text(clip, prompt)
    cons = [consistency_embedder(c) for c in clips] if consistency_embedder else embs
    scale = clip.logit_scale
    result = EditScores(
        edit=video_scores(embs[0], text, scale, cons[0]),
        prompt=prompt,
        model=clip.name,
        logit_scale=scale,
        consistency_model=consistency_model if consistency_embedder else None,
    )
    if source is not None:
        result.source = video_scores(embs[1], text, scale, cons[1])
        a, b = (torch.nn.functional.normalize(e.double(), dim=-1) for e in embs)
        result.source_similarity = float((a * b).sum(-1).mean())
    return result
