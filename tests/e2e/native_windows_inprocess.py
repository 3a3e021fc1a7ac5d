"""In-process checks of the native path's context windows (TAV_ContextWindows), run in a subprocess by the e2e tests.

Imports ComfyUI from ``--comfy-dir`` and the pack the way ComfyUI does, loads one random-weight
SD1.5-shaped checkpoint as a stock ``MODEL`` and as a tav pipeline with random tuned weights (every
piece matters), and samples one random inverted clip of 7 frames (3 DDIM steps, CFG 7.5) with
ComfyUI's CFGGuider + ddim sampler on the reference SIGMAS, and with ``tav.ddim.sample``:

- one window as long as the clip against no windows (bit-identical expected);
- windows of 3 overlapping by 1, native against tav, with and without the frame-0 anchor, and with
  the current frame among the sparse-causal keys;
- the hint frames each window's ControlNet receives (recorded in ``ControlNet.get_control``), and
  the frame count the patched model sees, against each window's ``index_list``;
- ComfyUI's own handler on the same model (its set_step crash, its unwindowed hints);
- bad settings. Prints one JSON object.

Usage: python native_windows_inprocess.py CKPT CONTROLNET --comfy-dir DIR --tmp DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inprocess import boot_pack, load_randomly_tuned, retagged

FRAMES, STEPS, CFG = 7, 3, 7.5


def rel(a, b) -> float:  # noqa: ANN001 - tensors
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("controlnet")
    ap.add_argument("--comfy-dir", required=True)
    ap.add_argument("--tmp", required=True, help="a folder for the tuned-weights files")
    a = ap.parse_args()

    boot_pack(a.comfy_dir)
    import comfy.context_windows
    import comfy.controlnet
    import comfy.samplers
    import comfy.sd
    import torch
    from tav_pack.nodes import context_windows as ctxw
    from tav_pack.nodes import native as glue

    from tav import ddim, native, weights
    from tav.windows import Windows

    model, pipe, video, g = load_randomly_tuned(a.ckpt)
    patched = glue.apply_tuned(model, native.tuned_from_pipeline(video))
    # the same weights with the current frame among the keys (Inflate attention=sparse_causal_self)
    tuned_file = str(Path(a.tmp) / "tuned.safetensors")
    weights.save_tuned(tuned_file, video)
    video_self = weights.load_tuned(retagged(tuned_file, attention="sparse_causal_self"), pipe)
    patched_self = glue.apply_tuned(model, native.tuned_from_pipeline(video_self))

    x_t = torch.randn(1, 4, FRAMES, 4, 4, generator=g)  # an "inverted" clip, VP convention, 32x32 px
    cond, uncond = torch.randn(1, 77, 768, generator=g), torch.randn(1, 77, 768, generator=g)
    sigmas = native.reference_sigmas(glue.model_sigma_table(patched), STEPS)
    scale = float(model.model.latent_format.scale_factor)
    hint = torch.arange(1, FRAMES + 1).float().div(FRAMES + 1).view(FRAMES, 1, 1, 1).expand(FRAMES, 3, 32, 32)
    cnet = comfy.controlnet.load_controlnet(a.controlnet)

    seen: list[dict] = []
    get_control = comfy.controlnet.ControlNet.get_control

    def recording(self, x_noisy, t, cond_, batched_number, transformer_options):  # noqa: ANN001, ANN202
        out = get_control(self, x_noisy, t, cond_, batched_number, transformer_options)
        w = transformer_options.get("context_window")
        frames = [round(float(v) * (FRAMES + 1)) - 1 for v in self.cond_hint[:, 0, 0, 0]]
        seen.append(
            {
                "index_list": list(w.index_list) if w is not None else None,
                "hint_frames": frames,
                "model_frames": x_noisy.shape[0] // batched_number,
            }
        )
        return out

    comfy.controlnet.ControlNet.get_control = recording

    def sample_native(m, control: bool = False) -> torch.Tensor:  # noqa: ANN001
        extra = {}
        if control:
            extra["control"] = cnet.copy().set_cond_hint(hint, 1.0, (0.0, 1.0))
            extra["control_apply_to_uncond"] = False
        guider = comfy.samplers.CFGGuider(m)
        guider.set_conds([[cond, dict(extra)]], [[uncond, dict(extra)]])
        guider.set_cfg(CFG)
        latent = native.vp_to_comfy_latent(x_t, float(sigmas[0]), scale)
        out = guider.sample(
            torch.zeros_like(latent), latent, comfy.samplers.sampler_object("ddim"), sigmas, disable_pbar=True, seed=0
        )
        return native.comfy_latent_to_vp(out.cpu(), float(sigmas[-1]), scale)

    def sample_tav(windows: Windows | None, pipeline=video) -> torch.Tensor:  # noqa: ANN001
        return ddim.sample(
            pipeline, cond, negative_embeds=uncond, latents=x_t, steps=STEPS, guidance_scale=CFG, windows=windows
        )

    def windowed(windows: Windows, fuse: str = ctxw.TAV_FUSE, m=patched):  # noqa: ANN001, ANN202
        return ctxw.context_windows(m, windows, fuse)

    res: dict = {}
    plain = sample_native(patched)
    one = sample_native(windowed(Windows(FRAMES, 2)))
    res["one_window"] = {"bit_identical": bool(torch.equal(one, plain)), "rel": rel(one, plain)}
    res["floor_unwindowed_native_vs_tav"] = rel(plain, sample_tav(None))

    res["native_vs_tav"] = {}
    outs = {}
    for anchor in (True, False):
        w = Windows(3, 1, anchor=anchor)
        outs[anchor] = sample_native(windowed(w))
        res["native_vs_tav"]["anchor" if anchor else "no_anchor"] = rel(outs[anchor], sample_tav(w))
    res["anchor_moves"] = rel(outs[True], outs[False])
    w = Windows(3, 1)
    self_keys = sample_native(windowed(w, m=patched_self))
    res["native_vs_tav"]["anchor_self_keys"] = rel(self_keys, sample_tav(w, video_self))
    res["self_keys_move"] = rel(self_keys, outs[True])
    res["windows_move"] = rel(outs[True], plain)
    # ComfyUI's fusions work too; "flat" averages an overlap of 2 evenly, tav-linear ramps it (1/3, 2/3)
    res["flat_vs_tav_linear"] = rel(
        sample_native(windowed(Windows(4, 2), "flat")), sample_native(windowed(Windows(4, 2)))
    )

    seen.clear()
    sample_native(windowed(Windows(3, 1)), control=True)
    res["control_records"] = list(seen)
    seen.clear()
    sample_native(windowed(Windows(FRAMES, 0)), control=True)
    res["control_records_one_window"] = list(seen)

    # ComfyUI's own handler on the same MODEL: the set_step crash; with only that fixed, unwindowed hints
    stock = patched.clone()
    stock.model_options["context_handler"] = comfy.context_windows.IndexListContextHandler(
        context_schedule=comfy.context_windows.get_matching_context_schedule("standard_static"),
        fuse_method=comfy.context_windows.get_matching_fuse_method("flat"),
        context_length=3,
        context_overlap=1,
    )
    try:
        sample_native(stock)
        res["stock_error"] = ""
    except Exception as e:  # noqa: BLE001 - what ComfyUI raises is the finding
        res["stock_error"] = f"{type(e).__name__}: {e}"

    class SetStepFixed(comfy.context_windows.IndexListContextHandler):
        def set_step(self, timestep, model_options):  # noqa: ANN001, ANN202
            super().set_step(timestep.flatten()[:1], model_options)

    stock.model_options["context_handler"].__class__ = SetStepFixed
    seen.clear()
    sample_native(stock, control=True)
    res["stock_control_records"] = list(seen)

    errors = {}
    for window, overlap in ((3, 3), (1, 0), (4, 5)):
        errors[f"{window}/{overlap}"] = ctxw.TAV_ContextWindows.validate_inputs(window=window, overlap=overlap)
    try:
        sample_native(windowed(Windows(FRAMES + 1, 1)))
        errors["longer_than_clip"] = ""
    except ValueError as e:
        errors["longer_than_clip"] = str(e)
    try:
        ctxw.TAV_ContextWindows.execute(model, 3, 1, True, ctxw.TAV_FUSE)
        errors["not_tuned"] = ""
    except ValueError as e:
        errors["not_tuned"] = str(e)
    res["errors"] = errors
    res["input_untouched"] = "context_handler" not in patched.model_options
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
