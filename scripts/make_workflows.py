"""Generate the drag-and-drop UI workflows (workflows/*.json) from their API twins (workflows/api/*.json).

The API files are the source of truth (tests queue them). This script reads the node definitions
from ComfyUI itself (stock nodes + this pack, loaded like ComfyUI loads it), lays the graph out in
columns by dependency depth, puts widget values in the order the frontend expects, adds a Note
node explaining the workflow, and writes UI format version 0.4. ``--check`` fails if a UI file
is out of date (for CI). Needs the host from scripts/setup_comfy_host.sh (or --comfy-dir).

Usage: python scripts/make_workflows.py [--check] [--comfy-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
API_DIR = REPO / "workflows" / "api"
UI_DIR = REPO / "workflows"
DEFAULT_COMFY = REPO / ".venv" / "comfyui"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN_W, GAP_X, GAP_Y = 400, 60, 40

NOTES = {
    "tav_shapes_edit": (
        "Tune-A-Video on the shapes toy model (runs on a CPU in minutes).\n\n"
        "1. Load Checkpoint picks diffusers/tav-shapes (put tav/assets/shapes_model into models/diffusers "
        "as tav-shapes).\n"
        "2. Load Video samples 8 frames at 64x64 from tav_shapes_red_square.mp4 in the input folder.\n"
        "3. Inflate + Tune learn the clip's motion from its caption; DDIM Invert turns the clip into noise.\n"
        "4. Sample renders the edit prompt from that noise; Save Video writes an mp4 to the output folder.\n\n"
        "Change only the edit prompt and queue again: tuning and inversion are cached, only Sample re-runs."
    ),
    "tav_shapes_long_clip": (
        "A 32-frame clip edited with a model tuned on 8 of its frames (shapes toy model, CPU).\n\n"
        "Write the clip first: python -m tav.shapes.clips <ComfyUI>/input/tav_shapes_long_clip.mp4 "
        "--clip red_circle_right --frames 32\n\n"
        "1. The first Load Video takes every 4th frame (8 frames): Tune learns the motion from them.\n"
        "2. The second Load Video takes all 32 frames: DDIM Invert runs them in windows of 8 that overlap by 2, "
        "every window anchored on the clip's frame 0, at the memory of one 8-frame window.\n"
        "3. Sample (window 0) reuses the inversion's windows; the overlaps are blended so no seam shows."
    ),
    "tav_sd15_man_skiing": (
        "The paper's man-skiing edit with Stable Diffusion 1.5 (needs a GPU).\n\n"
        "Settings of the official config: 24 frames, stride 2, 512x512; tuning 500 steps, lr 3e-5, seed 33, "
        "trainable attn1.to_q, attn2.to_q, attn_temp; DDIM inversion 50 steps with the empty prompt; "
        "sampling 50 DDIM steps, guidance 12.5.\n\n"
        "Put v1-5-pruned-emaonly.safetensors into models/checkpoints; the clip ships with the pack "
        "(tav-examples/man-skiing.mp4). "
        "Other prompts from the paper: 'mickey mouse is skiing on the snow', 'wonder woman, wearing a cowboy "
        "hat, is skiing', 'a man, wearing pink clothes, is skiing at sunset'."
    ),
    "tav_dreambooth_checkpoint": (
        "Edit with a DreamBooth (or any SD 1.x/2.x) checkpoint loaded by the stock Load Checkpoint node.\n\n"
        "From ComfyUI Models converts MODEL + CLIP + VAE into the pack's pipeline with exactly the same "
        "weights: add LoRA loaders between Load Checkpoint and it to tune a LoRA-merged model.\n\n"
        "The edit prompt comes from stock CLIP Text Encode nodes (CONDITIONING); when they are connected, "
        "Sample ignores its own prompt fields. Use the checkpoint's trigger words in the prompt."
    ),
    "tav_tune_once_edit_many": (
        "Tune once, edit many: one Tune and one DDIM Invert feed four Sample nodes.\n\n"
        "ComfyUI caches node outputs, so tuning and inversion run once; each Sample renders its own prompt "
        "(the car-turn prompts of the paper). Edit any prompt and queue again: only that Sample re-runs.\n\n"
        "Save Tuned writes the few-MB tuned weights to models/tuneavideo for later sessions "
        "(see tav_edit_with_saved_weights)."
    ),
    "tav_controlnet_edges": (
        "Structure-guided editing (the paper's ControlNet/T2I-Adapter use): the source clip's own per-frame "
        "Canny edges steer every frame of the edit, on top of the tuned model and the inverted noise.\n\n"
        "Put v1-5-pruned-emaonly.safetensors into models/checkpoints, an SD 1.5 Canny ControlNet (e.g. "
        "control_v11p_sd15_canny) into models/controlnet; the clip ships with the pack "
        "(tav-examples/car-turn.mp4).\n\n"
        "Lower strength or end_percent to give the prompt more freedom; raise the Canny thresholds for fewer, "
        "stronger edges."
    ),
    "tav_edit_with_saved_weights": (
        "Edit again later without re-tuning: Load Tuned applies weights from models/tuneavideo (written by "
        "Save Tuned) to the base model they were tuned on. A different base model is refused.\n\n"
        "Invert the same clip the weights were tuned on, then sample new prompts."
    ),
    "tav_native_edit": (
        "The native path: the tuned model as a stock MODEL, sampled by ComfyUI's own sampler.\n\n"
        "Tune once on the clip and DDIM-invert it (as in the other workflows), then Tune-A-Video -> MODEL "
        "patches a clone of the checkpoint's MODEL with the tuned video layers, Inverted noise -> LATENT turns "
        "the inverted clip into a stock LATENT, and SamplerCustomAdvanced samples it with DDIM Sigmas, "
        "DisableNoise, CFGGuider and the ddim sampler: the same video as Sample (Tune-A-Video) for the same "
        "settings. Frames are the LATENT batch. ComfyUI loads and offloads the model like any other.\n\n"
        "Save Tuned / Load Tuned work too: pick the file in Tune-A-Video -> MODEL instead of a pipeline."
    ),
    "tav_native_long_clip": (
        "The native path on a clip longer than the tuned length: 64 frames of man-skiing edited with a model "
        "tuned on 8 of them (needs a GPU and v1-5-pruned-emaonly.safetensors in models/checkpoints).\n\n"
        "1. The first Load Video takes every 8th frame (8 frames): Tune learns the motion from them.\n"
        "2. The second Load Video takes all 64 frames: DDIM Invert runs them in windows of 8 overlapping by 2.\n"
        "3. Context Windows (Tune-A-Video) makes the stock sampler denoise the LATENT window by window (memory: "
        "one window), every window attending to the clip's frame 0, overlaps blended as Sample (Tune-A-Video) "
        "blends them. Apply ControlNet after it gets each window's own hint frames."
    ),
    "tav_native_lora_controlnet": (
        "The native path with stock nodes after the bridge: a LoRA loader on the tuned MODEL and Apply "
        "ControlNet (Advanced) with one Canny edge map per source frame.\n\n"
        "Put a SD 1.5 style LoRA into models/loras and a SD 1.5 Canny ControlNet into models/controlnet. "
        "A LoRA loaded after Tune-A-Video -> MODEL stacks on the tuned weights; to tune on a LoRA'd model, put "
        "the LoRA before From ComfyUI Models and feed Tune-A-Video -> MODEL the same LoRA'd MODEL."
    ),
}


def load_node_classes(comfy_dir: Path) -> dict[str, Any]:
    """Stock node classes plus this pack's, imported the way ComfyUI imports them."""
    sys.path.insert(0, str(comfy_dir))
    os.chdir(comfy_dir)
    from comfy.cli_args import args

    args.cpu = True
    import nodes as comfy_nodes

    extras = stock_extra_nodes()
    spec = importlib.util.spec_from_file_location(
        "tav_pack", REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    assert spec is not None and spec.loader is not None
    pack = importlib.util.module_from_spec(spec)
    sys.modules["tav_pack"] = pack
    spec.loader.exec_module(pack)
    return {**comfy_nodes.NODE_CLASS_MAPPINGS, **extras, **sys.modules["tav_pack.nodes"].node_classes()}


#: comfy_extras modules whose stock nodes the workflows use (V1 or V3; V3 classes answer the V1 API)
EXTRA_MODULES = ("comfy_extras.nodes_custom_sampler", "comfy_extras.nodes_canny")


def stock_extra_nodes() -> dict[str, Any]:
    """The stock nodes of :data:`EXTRA_MODULES`, keyed by node id, loaded as ComfyUI loads them."""
    import asyncio
    import importlib

    found: dict[str, Any] = {}
    for name in EXTRA_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "NODE_CLASS_MAPPINGS"):
            found.update(module.NODE_CLASS_MAPPINGS)
            continue

        async def node_list(m: Any = module) -> list:
            return await (await m.comfy_entrypoint()).get_node_list()

        for cls in asyncio.run(node_list()):
            found[cls.GET_SCHEMA().node_id] = cls
    return found


def input_specs(cls: Any) -> list[tuple[str, str, dict, bool]]:
    """``(name, type, options, required)`` in declaration order; combos get type COMBO."""
    out = []
    types = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, "COMBO" if isinstance(kind, list) else kind, opts, section == "required"))
    return out


def has_control(name: str, kind: str, opts: dict) -> bool:
    """Whether the frontend adds a 'control after generate' widget after this one."""
    flag = opts.get("control_after_generate")
    if flag is None:
        return kind == "INT" and name in ("seed", "noise_seed")
    return bool(flag)


def ui_node(node_id: int, api: dict, cls: Any, in_links: dict, out_links: dict) -> dict:
    """One UI node: sockets, converted widget inputs, widgets_values in the frontend's order."""
    inputs, widgets = [], []
    specs = input_specs(cls)
    # (an upload button, where a combo has one, is appended last and is not serialised)
    for name, kind, opts, _required in specs:
        value = api["inputs"].get(name)
        is_widget = kind in WIDGET_TYPES and not opts.get("forceInput")
        linked = isinstance(value, list)
        if not is_widget or linked:
            entry: dict[str, Any] = {"name": name, "type": kind, "link": in_links.get(name)}
            if is_widget:
                entry["widget"] = {"name": name}
            inputs.append(entry)
        if is_widget:
            widgets.append(opts.get("default") if linked or value is None else value)
            if has_control(name, kind, opts):
                widgets.append("fixed")
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    outputs = [
        {"name": str(n), "type": t, "links": out_links.get(k, []), "slot_index": k}
        for k, (n, t) in enumerate(zip(names, cls.RETURN_TYPES, strict=False))
    ]
    n_rows = len(inputs) + max(0, len(widgets)) + 1
    multiline = sum(1 for _, k, o, _ in specs if k == "STRING" and o.get("multiline"))
    height = 46 + 24 * max(len(outputs), n_rows) + 100 * multiline
    return {
        "id": node_id,
        "type": api["class_type"],
        "pos": [0, 0],
        "size": [COLUMN_W - 20, height],
        "flags": {},
        "order": 0,
        "mode": 0,
        "inputs": inputs,
        "outputs": outputs,
        "title": api.get("_meta", {}).get("title"),
        "properties": {"Node name for S&R": api["class_type"]},
        "widgets_values": widgets,
    }


def api_to_ui(name: str, api: dict, classes: dict[str, Any]) -> dict:
    ids = sorted(api, key=int)
    links, in_links, out_links = [], {k: {} for k in ids}, {k: {} for k in ids}
    for dst in ids:
        cls = classes[api[dst]["class_type"]]
        for inp, value in api[dst]["inputs"].items():
            if isinstance(value, list):
                src, slot = str(value[0]), int(value[1])
                link_id = len(links) + 1
                kind = classes[api[src]["class_type"]].RETURN_TYPES[slot]
                links.append([link_id, int(src), slot, int(dst), None, kind])
                in_links[dst][inp] = link_id
                out_links[src].setdefault(slot, []).append(link_id)
        del cls
    nodes = {k: ui_node(int(k), api[k], classes[api[k]["class_type"]], in_links[k], out_links[k]) for k in ids}
    for link in links:  # target slot = index in the target's inputs list
        dst = nodes[str(link[3])]
        link[4] = next(i for i, e in enumerate(dst["inputs"]) if e["link"] == link[0])
    # layout: column = longest path from a source, stacked in id order
    depth: dict[str, int] = {}

    def d(k: str) -> int:
        if k not in depth:
            srcs = [str(v[0]) for v in api[k]["inputs"].values() if isinstance(v, list)]
            depth[k] = 1 + max((d(s) for s in srcs), default=-1)
        return depth[k]

    cols: dict[int, list[str]] = {}
    for k in ids:
        cols.setdefault(d(k), []).append(k)
    note_h = 360
    for c, members in cols.items():
        y = note_h + GAP_Y if c == 0 else 0
        for k in members:
            nodes[k]["pos"] = [c * (COLUMN_W + GAP_X), y]
            y += nodes[k]["size"][1] + GAP_Y
    order = sorted(ids, key=lambda k: (depth[k], int(k)))
    for i, k in enumerate(order):
        nodes[k]["order"] = i + 1
    note_id = max(int(k) for k in ids) + 1
    note = {
        "id": note_id,
        "type": "Note",
        "pos": [0, 0],
        "size": [COLUMN_W - 20, note_h],
        "flags": {},
        "order": 0,
        "mode": 0,
        "inputs": [],
        "outputs": [],
        "title": "About this workflow",
        "properties": {"text": ""},
        "widgets_values": [NOTES.get(name, "")],
        "color": "#432",
        "bgcolor": "#653",
    }
    ui_nodes = [note] + [nodes[k] for k in ids]
    for n in ui_nodes:
        if n.get("title") is None:
            n.pop("title", None)
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tuneavideo/workflows/{name}")),
        "revision": 0,
        "last_node_id": note_id,
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}, "tuneavideo_api_twin": f"api/{name}.json"},
        "version": 0.4,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a UI workflow is out of date")
    ap.add_argument("--comfy-dir", type=Path, default=Path(os.environ.get("COMFY_DIR", DEFAULT_COMFY)))
    a = ap.parse_args(argv)
    classes = load_node_classes(a.comfy_dir.resolve())
    stale = []
    for path in sorted(API_DIR.glob("*.json")):
        api = json.loads(path.read_text())
        text = json.dumps(api_to_ui(path.stem, api, classes), indent=2) + "\n"
        target = UI_DIR / path.name
        if a.check:
            if not target.is_file() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(REPO)}")
    if stale:
        print("out of date (run scripts/make_workflows.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
