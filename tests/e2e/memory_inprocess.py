"""In-process checks of the pipeline nodes under ComfyUI's memory manager, run in a subprocess by the e2e tests.

Imports ComfyUI (``--cpu``) from ``--comfy-dir`` and the pack the way ComfyUI does, then runs the Tune,
Invert and Sample nodes on a tiny random pipeline with ComfyUI's VRAM state set to ``--vram`` (NORMAL or
LOW: the policy the nodes follow; the devices stay the CPU). A progress-bar hook records, at every
step of every node, whether the pipeline being computed with is among ComfyUI's loaded models and
loaded whole.
Prints one JSON object.

Usage: python memory_inprocess.py --comfy-dir DIR --vram NORMAL_VRAM|LOW_VRAM|NO_VRAM
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from inprocess import REPO, boot_pack


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy-dir", required=True)
    ap.add_argument("--vram", required=True)
    a = ap.parse_args()

    boot_pack(a.comfy_dir)
    sys.path.insert(0, str(REPO))  # ahead of ComfyUI's own tests package
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    import torch
    from diffusers import ControlNetModel
    from tav_pack.nodes import memory
    from tav_pack.nodes.sample import TAV_DDIMInvert, TAV_Sample
    from tav_pack.nodes.tune import TAV_Tune

    from tav import inflation
    from tav.control import Control
    from tests.tiny import tiny_pipeline

    mm.vram_state = mm.VRAMState[a.vram]
    base = tiny_pipeline(0)
    pipe = inflation.inflate(base)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    current: dict = {}
    seen: dict[str, set] = {}

    def hook(value: int, total: int, preview: object, node_id: object = None) -> None:
        patcher = memory.pipeline_patcher(current["pipe"])
        whole = patcher.loaded_size() == patcher.model_size()  # loaded whole, also when ComfyUI asks for less
        state = (memory.is_loaded(patcher), whole)
        if current.get("control") is not None:  # the ControlNet a Sample uses is loaded with the pipeline
            state += (memory.is_loaded(memory.patcher_for(current["control"], {})),)
        seen.setdefault(current["node"], set()).add(state)

    comfy.utils.set_progress_bar_global_hook(hook)

    def result(r: Any) -> tuple:
        return tuple(r.args)  # a V3 node's io.NodeOutput

    def registered(p: object) -> bool:
        return memory.is_loaded(memory.pipeline_patcher(p))

    frames = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    out: dict = {"vram_state": mm.vram_state.name}
    current.update(node="tune", pipe=pipe)
    tuned, _ = result(TAV_Tune.execute(pipe, frames, "a clip", 2, 3e-5, 0, "attn1.to_q", "fp32", False))
    out["after_tune"] = {"input": registered(pipe), "tuned": registered(tuned)}
    current.update(node="invert", pipe=tuned)
    (inverted,) = result(TAV_DDIMInvert.execute(tuned, frames, 2))
    out["after_invert"] = registered(tuned)
    current.update(node="sample", pipe=tuned)
    TAV_Sample.execute(tuned, "a clip", "", 2, 7.5, 0.0, 0, 2, 32, 32, inverted=inverted)
    out["after_sample"] = registered(tuned)
    net = ControlNetModel.from_unet(base.unet, conditioning_embedding_out_channels=(16, 32, 96, 256)).eval()
    control = Control(net, frames.clone())
    current.update(node="sample_control", control=control)
    TAV_Sample.execute(tuned, "a clip", "", 2, 7.5, 0.0, 0, 2, 32, 32, inverted=inverted, control=control)
    out["control_after_sample"] = memory.is_loaded(memory.patcher_for(control, {}))
    out["during"] = {k: sorted(v) for k, v in seen.items()}
    patcher = memory.pipeline_patcher(tuned)
    out["loaded_bytes_before_unload_all"] = patcher.loaded_size()
    mm.unload_all_models()
    out["after_unload_all"] = {"tuned": registered(tuned), "loaded_bytes": patcher.loaded_size()}

    # what load_models_gpu asks of a model on a GPU under --novram (a 0.1-byte partial load; with a CPU
    # load device it always loads whole), ours vs a plain ModelPatcher over the same kind of modules
    def novram_fraction(patcher: comfy.model_patcher.ModelPatcher) -> float:
        mm.LoadedModel(patcher).model_load(lowvram_model_memory=0.1)
        return patcher.loaded_size() / patcher.model_size()

    fresh = tiny_pipeline(1)
    plain = torch.nn.ModuleDict({"unet": fresh.unet, "vae": fresh.vae, "text_encoder": fresh.text_encoder})
    cpu = torch.device("cpu")
    out["novram_load_fraction"] = {
        "pipeline_patcher": novram_fraction(memory.pipeline_patcher(tiny_pipeline(2))),
        "plain_model_patcher": novram_fraction(comfy.model_patcher.ModelPatcher(plain, cpu, cpu)),
    }
    out["input_unchanged"] = all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
