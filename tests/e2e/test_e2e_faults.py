"""A full disk during Save Tuned and Save Video (ENOSPC raised by the writer, and a real full tmpfs),
on the real node classes.

The node classes run in-process against the host's own ``folder_paths`` (no server: a live server
cannot be made to fail its writes from outside). Each fault must give a clean message naming the
file, leave no partial or temp file, and keep an existing file of the same name intact.
"""

from __future__ import annotations

import errno
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from comfy_host import COMFY_DIR, REPO

from tav import video_io, weights
from tav.inflation import inflate
from tests.bad_inputs import files_under, fill_disk, small_disk
from tests.tiny import tiny_pipeline


@pytest.fixture(scope="module")
def pack_nodes() -> Iterator[ModuleType]:
    """The pack's ``nodes`` package, imported under a private name with the host's modules on the path."""
    if str(COMFY_DIR) not in sys.path:
        sys.path.append(str(COMFY_DIR))  # appended: the host's module names never shadow ours
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # as the test server runs (--cpu), before comfy.model_management loads
    spec = importlib.util.spec_from_file_location(
        "tav_pack_nodes", REPO / "nodes" / "__init__.py", submodule_search_locations=[str(REPO / "nodes")]
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tav_pack_nodes"] = mod
    spec.loader.exec_module(mod)
    yield mod


@pytest.fixture
def folders(pack_nodes: ModuleType, tmp_path: Path) -> Iterator[dict[str, Path]]:
    import folder_paths

    out, tuned = tmp_path / "output", tmp_path / "tuneavideo"
    out.mkdir(), tuned.mkdir()
    old_out = folder_paths.get_output_directory()
    old_tuned = folder_paths.folder_names_and_paths.get("tuneavideo")
    folder_paths.set_output_directory(str(out))
    folder_paths.folder_names_and_paths["tuneavideo"] = ([str(tuned)], {".safetensors"})
    yield {"output": out, "tuned": tuned}
    folder_paths.set_output_directory(old_out)
    if old_tuned is not None:
        folder_paths.folder_names_and_paths["tuneavideo"] = old_tuned


def _full_disk(path: str, *args: object, **kwargs: object) -> None:
    """A writer that gets half way, then finds the disk full."""
    with open(path, "wb") as f:
        f.write(b"\x00" * 1024)
    raise OSError(errno.ENOSPC, "No space left on device")


def _same_name_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next save reuse counter 1, i.e. the name of the file saved before (a re-run with a fixed name)."""
    import folder_paths

    real = folder_paths.get_save_image_path

    def fixed(*args: object, **kwargs: object) -> tuple:
        folder, name, _counter, subfolder, prefix = real(*args, **kwargs)
        return folder, name, 1, subfolder, prefix

    monkeypatch.setattr(folder_paths, "get_save_image_path", fixed)


@pytest.mark.parametrize("fmt", ["mp4", "gif", "webp"])
def test_save_video_full_disk(pack_nodes, folders, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    node = pack_nodes.TAV_SaveVideo
    images = torch.rand(2, 64, 64, 3)
    first = node.execute(images, 8.0, fmt, "clip").ui["images"][0]["filename"]
    existing = (folders["output"] / first).read_bytes()
    before = files_under(folders["output"])
    monkeypatch.setitem(video_io._WRITERS, f".{fmt}", _full_disk)
    _same_name_again(monkeypatch)
    with pytest.raises(OSError) as info:
        node.execute(images, 8.0, fmt, "clip")
    msg = str(info.value)
    assert "disk is full" in msg and first in msg and "Traceback" not in msg, msg
    assert (folders["output"] / first).read_bytes() == existing
    assert files_under(folders["output"]) == before


def test_save_tuned_full_disk(pack_nodes, folders, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = inflate(tiny_pipeline())
    node = pack_nodes.TAV_SaveTuned
    first = node.execute(pipe, "tuned").args[0]
    existing = (folders["tuned"] / first).read_bytes()
    before = files_under(folders["tuned"])
    monkeypatch.setattr(weights, "_write_file", _full_disk)
    _same_name_again(monkeypatch)
    with pytest.raises(OSError) as info:
        node.execute(pipe, "tuned")
    msg = str(info.value)
    assert "disk is full" in msg and first in msg, msg
    assert (folders["tuned"] / first).read_bytes() == existing
    assert files_under(folders["tuned"]) == before


@pytest.mark.parametrize("fmt", ["mp4", "gif", "webp"])
def test_save_video_on_a_really_full_disk(
    pack_nodes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """The output folder on a real full file system (a small tmpfs; ffmpeg meets ENOSPC itself)."""
    import folder_paths

    node = pack_nodes.TAV_SaveVideo
    old_out = folder_paths.get_output_directory()
    with small_disk(tmp_path / "disk") as disk:
        folder_paths.set_output_directory(str(disk))
        try:
            first = node.execute(torch.rand(2, 64, 64, 3), 8.0, fmt, "clip").ui["images"][0]["filename"]
            existing = (disk / first).read_bytes()
            fill_disk(disk)
            before = files_under(disk)
            _same_name_again(monkeypatch)
            with pytest.raises(OSError) as info:
                node.execute(torch.rand(8, 64, 64, 3), 8.0, fmt, "clip")
        finally:
            folder_paths.set_output_directory(old_out)
        msg = str(info.value)
        assert "disk is full" in msg and first in msg and "Traceback" not in msg, msg
        assert (disk / first).read_bytes() == existing
        assert files_under(disk) == before
