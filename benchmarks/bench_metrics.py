"""Scoring time per frame of ``tav.metrics.score_edit`` (image embeddings + prompt + every number).

No downloads: the model is random, built from a config. ``--model tiny`` is the tests' tiny CLIP
(32 px), ``--model clip-l14`` has the shape of openai/clip-vit-large-patch14 (224 px, what the
benchmark scores with; run it on a GPU). The time is the median over ``--runs`` runs after one
warm-up, divided by the frame count; frames are random ``--size`` x ``--size`` images (their
preprocessing to the model's size is part of the time).

    .venv/bin/python benchmarks/bench_metrics.py                      # tiny, CPU
    .venv/bin/python benchmarks/bench_metrics.py --model clip-l14 --device cuda --frames 24 --size 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tav import metrics  # noqa: E402
from tav.clip_scoring import BUNDLED_TOKENIZER, Preprocess, ScoringClip  # noqa: E402
from tav.tuning import half_dtype  # noqa: E402

#: openai/clip-vit-large-patch14's shape (its config.json), for a random model of the real size
CLIP_L14 = {
    "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "max_position_embeddings": 77, "projection_dim": 768},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "projection_dim": 768},
    "projection_dim": 768,
}  # fmt: skip


def scoring_clip(model: str, device: torch.device, dtype: torch.dtype) -> ScoringClip:
    """A random CLIPModel of ``model``'s shape on ``device``, with the bundled tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    if model == "tiny":
        from tests.tiny_clip import TEXT, VISION

        cfg = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)
    else:
        cfg = CLIPConfig(**CLIP_L14)
    torch.manual_seed(0)
    net = CLIPModel(cfg).to(device=device, dtype=dtype).eval()
    size = cfg.vision_config.image_size
    return ScoringClip(net, CLIPTokenizer.from_pretrained(BUNDLED_TOKENIZER), Preprocess(size, size), model)


def time_scoring(clip: ScoringClip, frames: int, size: int, runs: int, batch_size: int) -> dict:
    """Median seconds per frame of scoring an edit and its source (2 x ``frames`` images) over ``runs`` runs."""
    device = clip.device
    edit, source = torch.rand(2, frames, size, size, 3).unbind(0)

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        metrics.score_edit(clip, edit, "a man is skiing", source, batch_size=batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    once()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [once() for _ in range(runs)]
    out = {
        "model": clip.name,
        "device": str(device),
        "dtype": str(clip.model.logit_scale.dtype).replace("torch.", ""),
        "frames_scored_per_run": 2 * frames,
        "input_size": size,
        "batch_size": batch_size,
        "runs": runs,
        "seconds_per_frame": statistics.median(times) / (2 * frames),
        "seconds_per_run": times,
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        out["max_memory_allocated"] = torch.cuda.max_memory_allocated(device)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("tiny", "clip-l14"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (the edit and its source are scored)")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels before CLIP's preprocessing")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; on a busy machine 1 is fastest)")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = half_dtype(device) if device.type == "cuda" else torch.float32
    result = time_scoring(scoring_clip(args.model, device, dtype), args.frames, args.size, args.runs, args.batch_size)
    print(
        f"{args.model} CLIP on {result['device']} ({result['dtype']}, {result['torch_threads']} threads), "
        f"{args.size}x{args.size} frames: {1000 * result['seconds_per_frame']:.2f} ms per frame "
        f"(median of {args.runs} runs of {result['frames_scored_per_run']} frames)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
