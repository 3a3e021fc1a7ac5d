"""The shipped shapes toy model: loads offline like SD, draws what it is told, edits a clip end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tav.shapes import analyzer as A
from tav.shapes.clips import get_clip
from tav.shapes.demo import MODEL_DIR

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pipe():
    from tav.checkpoints import load_pipeline

    torch.set_num_threads(1)
    return load_pipeline(MODEL_DIR)


def test_folder_has_the_formats_of_a_real_sd_model():
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for sub in ("unet", "vae", "text_encoder"):
        files = list((MODEL_DIR / sub).glob("*.safetensors"))
        assert files, sub
    from safetensors import safe_open

    with safe_open(str(MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    for name in ("vocab.json", "merges.txt"):
        assert (MODEL_DIR / "tokenizer" / name).is_file()
    sched = json.loads((MODEL_DIR / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction" and sched["steps_offset"] == 1
    total = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert total <= 25e6, f"{total / 1e6:.1f} MB"


def test_loads_offline_through_the_sd_loader(pipe):
    unet = pipe.unet
    assert type(unet).__name__ == "UNet2DConditionModel"
    assert "CrossAttnDownBlock2D" in unet.config.down_block_types
    assert type(pipe.vae).__name__ == "AutoencoderKL" and type(pipe.text_encoder).__name__ == "CLIPTextModel"
    assert pipe.prediction_type == "v_prediction" and pipe.base_fingerprint
    assert pipe.encode_prompt("a red circle on a white background").shape == (1, 77, unet.config.cross_attention_dim)
    names = [n for n, _ in unet.named_modules()]
    assert any(n.endswith("attn1.to_q") for n in names) and any(n.endswith("attn2.to_q") for n in names)


def test_vae_round_trip_is_read_correctly(pipe):
    clip = get_clip("two_crossing")
    frames = torch.from_numpy(clip.frames())
    rec = pipe.decode_latents(pipe.encode_video(frames))
    assert A.textual_faithfulness(A.analyze_video(rec), clip.caption) == 1.0


def test_toy_model_draws_the_prompt(pipe):
    """A small, seeded slice of the T2I check (the full 100+ sample figure is in TRAINING.json)."""
    from tav.ddim import sample

    prompts = [
        "a red circle on a white background",
        "a blue square on a black background",
        "a green triangle on a white background",
        "a yellow square on a black background",
    ]
    hits = 0
    for i, p in enumerate(prompts):
        z = sample(pipe, pipe.encode_prompt(p), frames=2, height=64, width=64, steps=20, guidance_scale=5.0, seed=i)
        hits += sum(A.frame_matches(A.analyze_frame(f), p) for f in pipe.decode_latents(z))
    assert hits >= 6, f"{hits}/8 samples show their prompt"


def test_short_end_to_end_edit_is_readable(pipe):
    from tav.ddim import invert, sample
    from tav.inflation import inflate
    from tav.tuning import TuneConfig, tune

    clip = get_clip("red_circle_right")
    frames = torch.from_numpy(clip.frames())
    lat = pipe.encode_video(frames)
    video = inflate(pipe, zero_temporal_bias=True)
    cfg = TuneConfig(steps=4, lr=3e-4, gradient_checkpointing=False)
    tuned = tune(video, lat, pipe.encode_prompt(clip.caption), cfg).pipeline
    start = invert(tuned, lat, steps=10)
    out = tuned.decode_latents(
        sample(tuned, pipe.encode_prompt(clip.caption), latents=start, steps=10, guidance_scale=5.0)
    )
    assert out.shape == frames.shape and torch.isfinite(out).all()
    readings = A.analyze_video(out)
    assert all(r.objects for r in readings), "the analyzer finds no object in some frame"
    dist, found = A.motion_fidelity(readings, A.analyze_video(frames), clip.caption, clip.caption)
    assert found == 1.0 and dist < 6.0


def test_demo_command_runs(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "tav", "demo", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # nothing a user did not ask for: no third-party warnings or progress bars, only the demo's own lines
    assert proc.stderr.strip() == "", f"the demo printed to stderr:\n{proc.stderr[-3000:]}"
    noise = [ln for ln in proc.stdout.splitlines() if "warn" in ln.lower() or "it/s]" in ln or "%|" in ln]
    assert not noise, f"third-party noise in the demo's output: {noise}"
    assert (tmp_path / "demo.gif").stat().st_size > 0 and (tmp_path / "demo.mp4").stat().st_size > 0
    assert (
        "textual faithfulness" in proc.stdout
        and "motion fidelity" in proc.stdout
        and "frame consistency" in proc.stdout
    )
    from tav.video_io import read_video

    clip = read_video(tmp_path / "demo.mp4", n_frames=0, stride=1, resize="none")
    assert clip.frames.shape[2] == 3 * clip.frames.shape[1]  # source | edit 1 | edit 2
    assert np.isfinite(clip.frames.numpy()).all()


def test_evaluation_runs_every_variant_and_reports(tmp_path, pipe):
    """The evaluation driver end to end at toy settings: every paper variant and diagnostic, report + sheet."""
    from tav.shapes import evaluate as E
    from tav.shapes import report as R

    args = ["--clips", "blue_triangle_left", "--tune-steps", "2", "--steps", "3", "--gifs", "1", "--out", str(tmp_path)]
    res = E.main(args + ["--variants", *E.ALL])
    rows = res["rows"]
    assert {r["variant"] for r in rows} == set(E.ALL) and len(rows) == len(E.ALL) * res["meta"]["videos"]
    report = (tmp_path / "report.md").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    verdicts = [c["verdict"] for c in summary["claims"]]
    assert len(verdicts) == len(R.PAPER_CLAIMS) + 3 * len(R.OPTIONS)
    # one clip: no spread over clips to resample, so every claim is undecided, never a verdict from noise
    assert set(verdicts) == {"undecided"} and report.count("| **undecided** |") == len(verdicts)
    assert len(summary["differences"]) == len(R.COMPARISONS) and "## Paired differences" in report
    for v, label in E.LABELS.items():
        assert f"| {label} (`{v}`) |" in report
    assert (tmp_path / "contact_sheet.png").stat().st_size > 0 and list(tmp_path.glob("*.gif"))


def test_equal_models_give_equal_edits(pipe):
    """Inflated with per-frame attention and per-frame norm, untuned, the video model edits exactly as the 2-D one."""
    from tav.shapes import evaluate as E
    from tav.shapes.clips import edits_for

    clip = get_clip("blue_triangle_left")
    same = E.Variant("same as 2-D", attention="frame", norm="frame", tuned=False)
    out = E.edit_clip(pipe, clip, edits_for(clip)[:1], E.EvalConfig(steps=3), ["per_frame", same], log=lambda s: None)
    (a,), (b,) = out["per_frame"].values(), out[same.label].values()
    assert (a - b).abs().max() < 1e-4
    sc = E.edit_clip(pipe, clip, edits_for(clip)[:1], E.EvalConfig(steps=3), ["no_tuning"], log=lambda s: None)
    assert (next(iter(sc["no_tuning"].values())) - a).abs().max() > 1e-3  # sparse-causal does change the result


def test_shards_split_by_variant_merge_into_one_report(tmp_path, pipe):
    from tav.shapes import evaluate as E

    common = ["--clips", "blue_triangle_left", "--steps", "3", "--gifs", "0"]
    E.main(common + ["--out", str(tmp_path / "a"), "--shard", "0/1", "--variants", "per_frame"])
    E.main(common + ["--out", str(tmp_path / "b"), "--shard", "0/1", "--variants", "no_tuning"])
    (tmp_path / "b" / "shard_0").rename(tmp_path / "a" / "shard_extra")
    res = E.main(common + ["--out", str(tmp_path / "a"), "--merge", "--variants", "per_frame", "no_tuning"])
    assert {r["variant"] for r in res["rows"]} == {"per_frame", "no_tuning"}
    assert len(res["rows"]) == 2 * res["meta"]["videos"]
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| per-frame editing (2-D) (`per_frame`) |" in report and "| w/o tuning (`no_tuning`) |" in report
    with pytest.raises(SystemExit, match="lack variant"):
        E.main(common + ["--out", str(tmp_path / "a"), "--merge", "--variants", "per_frame", "tav"])
