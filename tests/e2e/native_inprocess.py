"""In-process checks of the native bridge against tav's VideoUNet, run in a subprocess by the e2e tests.

Imports ComfyUI from ``--comfy-dir`` (the host under test) and the pack the way ComfyUI does, loads
one random-weight SD1.5-shaped checkpoint both as a stock ``MODEL`` and as a tav pipeline, gives the
inflated pipeline random tuned weights (temporal attention with a non-zero output, perturbed
``to_q``s, so every piece matters), writes them to ``--tuned-out`` for the server tests, and
measures the patched ``diffusion_model`` against ``VideoUNet`` on the same inputs (cond + uncond
in one batch): parity per frame count (and for per-frame GroupNorm and for the current frame among the keys), each piece left out, the lowvram patching path, the base
MODEL before/after, the size accounting and the base-model check. Prints one JSON object.

Usage: python native_inprocess.py CKPT --comfy-dir DIR --tuned-out FILE
"""

from __future__ import annotations

import argparse
import json

from inprocess import boot_pack, load_randomly_tuned, retagged


def rel(a, b) -> float:  # noqa: ANN001 - tensors
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--comfy-dir", required=True)
    ap.add_argument("--tuned-out", required=True)
    a = ap.parse_args()

    boot_pack(a.comfy_dir)
    import comfy.model_management as mm
    import torch
    from tav_pack.nodes import native as glue

    from tav import native, weights

    model, pipe, video, g = load_randomly_tuned(a.ckpt)
    video = video.replace(info={"frames": 2, "height": 64, "width": 64, "prompt": "probe"})
    weights.save_tuned(a.tuned_out, video)
    tuned = native.tuned_from_pipeline(video)
    res: dict = {
        "fingerprint": tuned.fingerprint,
        "temporal_params": native.temporal_param_count(tuned.temporal.values()),
    }

    def run(m, x, t, ctx, conds, lowvram=False):  # noqa: ANN001, ANN202
        """One forward of ``m``'s diffusion model, loaded the way ComfyUI loads it (or lowvram-patched)."""
        mm.unload_all_models()
        if lowvram:  # every module offloaded: weights cast and patched per forward (LowVramPatch)
            m.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=1)
            res["lowvram_patch_counter"] = m.model.lowvram_patch_counter
        else:
            mm.load_models_gpu([m])
        try:
            to = m.model_options["transformer_options"].copy()
            to["wrappers"] = m.wrappers  # what sampling merges in (comfy.sampler_helpers)
            to["cond_or_uncond"] = list(range(conds))
            with torch.no_grad():
                return m.model.diffusion_model(x, t, context=ctx, transformer_options=to).clone()
        finally:
            if lowvram:
                m.unpatch_model(device_to=torch.device("cpu"))
            mm.unload_all_models()

    def base_out(m, x, t, ctx):  # noqa: ANN001, ANN202
        return run(m, x, t, ctx, 1)

    def patched_out(m, frames, lowvram=False):  # noqa: ANN001, ANN202
        x, t, ctx, _ = inputs[frames]
        return run(m, x, t, ctx, 2, lowvram)

    inputs = {}
    for f in (1, 2, 5):
        x5 = torch.randn(2, 4, f, 8, 8, generator=g)
        emb = torch.randn(2, 77, 768, generator=g)
        t = torch.tensor([500.0, 500.0])
        with torch.no_grad():
            ref = video.unet(x5, t, emb)
        x = x5.permute(0, 2, 1, 3, 4).reshape(2 * f, 4, 8, 8)
        inputs[f] = (
            x,
            t.repeat_interleave(f),
            emb.repeat_interleave(f, 0),
            ref.permute(0, 2, 1, 3, 4).reshape(2 * f, 4, 8, 8),
        )

    def reference_out(path: str) -> torch.Tensor:
        with torch.no_grad():
            out = weights.load_tuned(path, pipe).unet(x5, t, emb)
        return out.permute(0, 2, 1, 3, 4).reshape(2 * f, 4, 8, 8)

    # the same weights tuned with per-frame GroupNorm (Inflate norm=frame): the MODEL must not pool then;
    # and with the current frame among the sparse-causal keys (Inflate attention=sparse_causal_self)
    frame_file, self_file = retagged(a.tuned_out, norm="frame"), retagged(a.tuned_out, attention="sparse_causal_self")
    ref_frame, ref_self = reference_out(frame_file), reference_out(self_file)

    x2, t2, c2, _ = inputs[2]
    before = base_out(model, x2, t2, c2)
    sd_before = {k: v.clone() for k, v in model.model.state_dict().items()}

    patched = glue.apply_tuned(model, tuned)
    res["parity"] = {str(f): rel(patched_out(patched, f), inputs[f][3]) for f in inputs}
    full = patched_out(patched, 5)
    res["lowvram"] = rel(patched_out(patched, 5, lowvram=True), full)
    res["controls"] = {}
    for piece in native.PIECES:
        ablated = glue.apply_tuned(model, tuned, leave_out=[piece])
        res["controls"][piece] = rel(patched_out(ablated, 5), inputs[5][3])
    res["parity_frame_norm"] = rel(
        patched_out(glue.apply_tuned(model, native.tuned_from_file(frame_file)), 5), ref_frame
    )
    patched_self = glue.apply_tuned(model, native.tuned_from_file(self_file))
    res["parity_self_keys"] = rel(patched_out(patched_self, 5), ref_self)
    res["self_keys_vs_reference_keys"] = rel(patched_out(patched_self, 5), inputs[5][3])
    res["size"] = {"base": model.model_size(), "patched": patched.model_size()}
    after = base_out(model, x2, t2, c2)
    res["base_bit_identical"] = bool(torch.equal(before, after))
    res["base_state_identical"] = all(torch.equal(v, sd_before[k]) for k, v in model.model.state_dict().items())
    res["base_has_no_patches"] = not model.patches and not model.object_patches and not glue.has_tuned(model)
    try:
        glue.apply_tuned(model, native.TunedWeights(**{**tuned.__dict__, "fingerprint": "0123456789abcdef"}))
        res["mismatch_error"] = ""
    except ValueError as e:
        res["mismatch_error"] = str(e)
    try:
        glue.apply_tuned(patched, tuned)
        res["double_apply_error"] = ""
    except ValueError as e:
        res["double_apply_error"] = str(e)
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
