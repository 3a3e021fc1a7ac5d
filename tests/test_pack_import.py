"""The pack's ComfyUI entry point must be importable outside ComfyUI (e.g. by tools scanning it)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_entry_point_imports_outside_comfyui() -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('tav_pack', {str(ROOT / '__init__.py')!r},"
        f" submodule_search_locations=[{str(ROOT)!r}])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['tav_pack'] = mod; spec.loader.exec_module(mod)\n"
        "assert not hasattr(mod, 'comfy_entrypoint') and not hasattr(mod, 'NODE_CLASS_MAPPINGS')\n"
        "assert 'folder_paths' not in sys.modules and 'torch' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr


def test_core_does_not_import_comfyui() -> None:
    """tav is the ComfyUI-free core: no module of it may import ComfyUI's packages."""
    for path in (ROOT / "tav").rglob("*.py"):
        text = path.read_text()
        for name in ("folder_paths", "comfy.", "import comfy", "comfy_api", "nodes."):
            assert name not in text.replace("tav.nodes", ""), f"{path.relative_to(ROOT)} mentions {name!r}"
    assert importlib.util.find_spec("tav") is not None
