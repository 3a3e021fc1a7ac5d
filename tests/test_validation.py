"""Unit tests of tav.validation: every check's accepted values, boundaries and refusals.

Each refusal is matched in full: the user sees this sentence (CLI exit status 2, a node error), so
both what was wrong and the advice are behaviour. Files are real (folders, FIFOs, sockets,
/dev/null); only permissions are faked through ``os.access``, since the suite runs as root, for whom
every file is readable and writable.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import stat
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tav import validation as v
from tav.validation import InputError, NonFiniteError, TavWarning


@contextmanager
def refused(message: str, kind: type[Exception] = InputError) -> Iterator[None]:
    """The block must raise ``kind`` with exactly ``message``."""
    with pytest.raises(kind) as info:
        yield
    assert type(info.value) is kind
    assert str(info.value) == message


def deny(*modes: int) -> Callable[[str, int], bool]:
    """An ``os.access`` stand-in that refuses any check asking for one of ``modes``."""

    def access(path: str, mode: int) -> bool:
        return not any(mode & m for m in modes)

    return access


# --- warn ----------------------------------------------------------------------------------------


def test_warn_emits_a_tav_warning_pointing_at_the_caller() -> None:
    """The warning names the line that asked for the approximate result, not validation.py."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v.warn("only 3 of 8 frames")
    assert len(caught) == 1
    assert caught[0].category is TavWarning
    assert str(caught[0].message) == "only 3 of 8 frames"
    assert caught[0].filename == __file__


# --- numbers -------------------------------------------------------------------------------------


def test_number_in_range_is_returned_unchanged() -> None:
    assert v.check_number("cfg", 7.5, 0, 30) == 7.5
    assert v.check_number("cfg", 2.5) == 2.5  # floats are fine unless a whole number is asked for
    assert v.check_number("steps", 3) == 3
    assert v.check_number("delta", -1e300) == -1e300  # no bounds: any finite number


def test_bounds_are_inclusive() -> None:
    assert v.check_number("x", 1, 1, 5) == 1
    assert v.check_number("x", 5, 1, 5) == 5
    assert v.check_number("x", 0.5, 0.5, 0.5) == 0.5


def test_whole_float_becomes_an_int() -> None:
    """3.0 from a JSON workflow or a float widget is a valid frame count, and callers index with it."""
    out = v.check_number("frames", 3.0, 1, 8, integer=True)
    assert out == 3 and type(out) is int
    out = v.check_number("frames", 7, integer=True)
    assert out == 7 and type(out) is int


def test_below_and_above_the_range_are_refused_with_the_limit_and_the_hint() -> None:
    with refused("--steps must be at least 1, got 0; the paper uses 500"):
        v.check_number("--steps", 0, 1, 10, integer=True, hint="the paper uses 500")
    with refused("--steps must be at most 10, got 11"):
        v.check_number("--steps", 11, 1, 10, integer=True)
    with refused("cfg must be at least 0.5, got 0.25"):
        v.check_number("cfg", 0.25, 0.5)
    with refused("cfg must be at most 0.5, got 0.75"):
        v.check_number("cfg", 0.75, None, 0.5)


def test_out_of_range_whole_float_is_reported_as_the_int() -> None:
    with refused("frames must be at least 1, got -1"):
        v.check_number("frames", -1.0, 1, integer=True)


@pytest.mark.parametrize("value", [True, False, "3", None, [1], 1j])
def test_non_numbers_and_bools_are_refused(value: object) -> None:
    """A bool is an int to Python but never a meaningful setting: True frames is a workflow bug."""
    with refused(f"cfg must be a number, got {value!r}"):
        v.check_number("cfg", value)
    with refused(f"frames must be a whole number, got {value!r}; use 8"):
        v.check_number("frames", value, integer=True, hint="use 8")


def test_fractions_are_refused_where_a_whole_number_is_needed() -> None:
    with refused("frames must be a whole number, got 2.5"):
        v.check_number("frames", 2.5, 1, 8, integer=True)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value: float) -> None:
    with refused(f"cfg must be a finite number, got {value!r}; try 7.5"):
        v.check_number("cfg", value, hint="try 7.5")
    with refused(f"cfg must be a finite number, got {value!r}"):
        v.check_number("cfg", value)
    with refused(f"frames must be a whole number, got {value!r}"):  # not a whole number either
        v.check_number("frames", value, integer=True)


@pytest.mark.parametrize("seed", [0, 1, 2**64 - 1, 5.0])
def test_seeds_cover_torchs_whole_range(seed: float) -> None:
    out = v.check_seed("--seed", seed)
    assert out == seed and type(out) is int


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seeds_outside_torchs_range_are_refused(seed: int) -> None:
    side = "least 0" if seed < 0 else f"most {2**64 - 1}"
    with refused(f"--seed must be at {side}, got {seed}; use a seed between 0 and 2**64 - 1"):
        v.check_seed("--seed", seed)


def test_fractional_and_bool_seeds_are_refused() -> None:
    with refused("seed must be a whole number, got 1.5; use a seed between 0 and 2**64 - 1"):
        v.check_seed("seed", 1.5)
    with refused("seed must be a whole number, got True; use a seed between 0 and 2**64 - 1"):
        v.check_seed("seed", True)


# --- devices -------------------------------------------------------------------------------------


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with two CUDA devices, as far as check_device can tell (no CUDA call is made)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_cpu_is_always_usable(no_gpu: None) -> None:
    assert v.check_device("cpu") == torch.device("cpu")
    assert v.check_device("  cpu\n") == torch.device("cpu")  # pasted with spaces
    assert v.check_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_picks_cuda_when_there_is_one(two_gpus: None) -> None:
    assert v.check_device("auto") == torch.device("cuda")
    assert v.check_device(" auto ") == torch.device("cuda")


def test_auto_falls_back_to_cpu(no_gpu: None) -> None:
    assert v.check_device("auto") == torch.device("cpu")


def test_cuda_without_a_gpu_is_refused_with_the_fallback(no_gpu: None) -> None:
    with refused("device 'cuda' asked for, but no CUDA GPU is available here; use --device cpu (or auto)"):
        v.check_device("cuda")
    with refused("device 'cuda:0' asked for, but no CUDA GPU is available here; use --device cpu (or auto)"):
        v.check_device("cuda:0")


def test_existing_cuda_devices_are_accepted(two_gpus: None) -> None:
    assert v.check_device("cuda") == torch.device("cuda")
    assert v.check_device("cuda:0") == torch.device("cuda:0")
    assert v.check_device("cuda:1") == torch.device("cuda:1")


def test_a_cuda_index_past_the_last_device_is_refused(two_gpus: None) -> None:
    with refused("device 'cuda:2' does not exist: this machine has 2 CUDA device(s), cuda:0.."):
        v.check_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "", "cuda:x", "cpu cuda", None, 3])
def test_unknown_device_names_are_refused(name: object) -> None:
    with refused(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps"):
        v.check_device(name)


def test_devices_torch_knows_but_we_do_not_run_on_are_refused() -> None:
    with refused("device type 'meta' is not supported; use auto, cpu, cuda, cuda:N or mps"):
        v.check_device("meta")


def test_mps_is_used_only_where_it_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert v.check_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with refused("device 'mps' asked for, but MPS is not available here; use cpu (or auto)"):
        v.check_device("mps")


# --- output files --------------------------------------------------------------------------------


def test_output_file_is_the_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert v.check_output_file("out.safetensors") == str(tmp_path / "out.safetensors")
    assert v.check_output_file(tmp_path / "a.bin") == str(tmp_path / "a.bin")  # PathLike


def test_output_file_expands_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert v.check_output_file("~/out.bin") == str(tmp_path / "out.bin")


def test_output_file_may_overwrite_and_may_create_its_folders(tmp_path: Path) -> None:
    (tmp_path / "old.bin").write_bytes(b"x")
    assert v.check_output_file(tmp_path / "old.bin") == str(tmp_path / "old.bin")
    deep = tmp_path / "a" / "b" / "c.bin"
    assert v.check_output_file(deep) == str(deep)


@pytest.mark.parametrize("path", ["", "   ", None, 3])
def test_empty_output_file_paths_are_refused(path: object) -> None:
    with refused("output file path is empty; give a file name such as out.safetensors"):
        v.check_output_file(path)
    with refused("tuned weights path is empty; give a file name such as out.safetensors"):
        v.check_output_file(path, what="tuned weights")


def test_a_folder_is_not_an_output_file(tmp_path: Path) -> None:
    text = str(tmp_path)
    with refused(f"output file {text!r} is a folder; give a file name inside it, e.g. {text}/out"):
        v.check_output_file(text)


def test_output_file_extension_is_checked_ignoring_case(tmp_path: Path) -> None:
    exts = [".safetensors", ".pt"]  # any iterable, not only a tuple
    assert v.check_output_file(tmp_path / "a.safetensors", exts=exts) == str(tmp_path / "a.safetensors")
    assert v.check_output_file(tmp_path / "A.PT", exts=exts) == str(tmp_path / "A.PT")
    text = str(tmp_path / "a.ckpt")
    with refused(f"weights {text!r} must end with .safetensors or .pt"):
        v.check_output_file(text, exts=exts, what="weights")
    with refused(f"output file {text!r} must end with .mp4"):
        v.check_output_file(text, exts=iter([".mp4"]))


def test_output_file_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    text = str(tmp_path / "f.txt" / "sub" / "out.bin")
    base = str(tmp_path / "f.txt")
    with refused(f"cannot write output file {text!r}: {base!r} is a file, not a folder; choose another path"):
        v.check_output_file(text)


@pytest.mark.parametrize("mode", [os.W_OK, os.X_OK])
def test_output_file_in_a_folder_we_cannot_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    """Writing a file needs both write and search permission on its folder."""
    monkeypatch.setattr(os, "access", deny(mode))
    text = str(tmp_path / "new" / "out.bin")
    with refused(f"cannot write video {text!r}: no write permission in {str(tmp_path)!r}; choose another folder"):
        v.check_output_file(text, what="video")


# --- output folders ------------------------------------------------------------------------------


def test_output_folder_may_exist_or_be_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert v.check_output_dir(tmp_path) == str(tmp_path)
    assert v.check_output_dir(str(tmp_path / "x" / "y")) == str(tmp_path / "x" / "y")
    monkeypatch.chdir(tmp_path)
    assert v.check_output_dir("frames") == str(tmp_path / "frames")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert v.check_output_dir("~/frames") == str(tmp_path / "frames")


@pytest.mark.parametrize("path", ["", " ", None, 0])
def test_empty_output_folder_paths_are_refused(path: object) -> None:
    with refused("output folder path is empty"):
        v.check_output_dir(path)
    with refused("frames folder path is empty"):
        v.check_output_dir(path, what="frames folder")


def test_a_file_is_not_an_output_folder(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    text = str(tmp_path / "f.txt")
    with refused(f"output folder {text!r} is a file, not a folder; choose a folder path"):
        v.check_output_dir(text)
    sub = str(tmp_path / "f.txt" / "sub")
    with refused(f"cannot write frames {sub!r}: {text!r} is a file, not a folder; choose another path"):
        v.check_output_dir(sub, what="frames")


def test_output_folder_without_permission_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder itself is checked when it exists, not its parent."""
    monkeypatch.setattr(os, "access", deny(os.W_OK))
    text = str(tmp_path)
    with refused(f"cannot write output folder {text!r}: no write permission in {text!r}; choose another folder"):
        v.check_output_dir(text)


# --- input files ---------------------------------------------------------------------------------


def test_input_file_is_the_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    assert v.check_input_file(tmp_path / "clip.mp4") == str(tmp_path / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    assert v.check_input_file("clip.mp4") == str(tmp_path / "clip.mp4")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert v.check_input_file("~/clip.mp4") == str(tmp_path / "clip.mp4")


@pytest.mark.parametrize("path", ["", "\t", None, 1.0])
def test_empty_input_paths_are_refused(path: object) -> None:
    with refused("file path is empty"):
        v.check_input_file(path)
    with refused("video path is empty"):
        v.check_input_file(path, "video")


def test_missing_input_file_is_not_found(tmp_path: Path) -> None:
    text = str(tmp_path / "nope.mp4")
    with refused(f"file not found: {text}", FileNotFoundError):
        v.check_input_file(text)
    with refused(f"video not found: {text}", FileNotFoundError):
        v.check_input_file(text, what="video")


def test_a_folder_is_not_an_input_file(tmp_path: Path) -> None:
    with refused(f"video {str(tmp_path)!r} is a folder, expected a file"):
        v.check_input_file(tmp_path, "video")


def test_devices_are_refused_before_reading() -> None:
    """/dev/zero and /dev/null have size 0 and reading /dev/zero never ends."""
    with refused("file '/dev/null' is a character device, not a regular file; give a file saved on disk"):
        v.check_input_file("/dev/null")
    with refused("video '/dev/zero' is a character device, not a regular file; give a file saved on disk"):
        v.check_input_file("/dev/zero", "video")


def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO with no writer would hang the job; stat does not open it."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with refused(f"file {str(fifo)!r} is a named pipe, not a regular file; give a file saved on disk"):
        v.check_input_file(fifo)


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with refused(
            f"file {str(path)!r} is a socket or other special file, not a regular file; give a file saved on disk"
        ):
            v.check_input_file(path)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (stat.S_IFCHR, "a character device"),
        (stat.S_IFBLK, "a block device"),
        (stat.S_IFIFO, "a named pipe"),
        (stat.S_IFSOCK, "a socket or other special file"),
    ],
)
def test_special_files_are_named_by_kind(mode: int, kind: str) -> None:
    """No block device can be relied on to exist (containers, CI), so the kind names are checked on the modes."""
    assert v._special_kind(mode | 0o600) == kind


def test_unreadable_input_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0")
    monkeypatch.setattr(os, "access", deny(os.W_OK, os.X_OK))  # read-only: fine
    assert v.check_input_file(path) == str(path)
    monkeypatch.setattr(os, "access", deny(os.R_OK))
    with refused(f"file {str(path)!r} is not readable (permission denied)"):
        v.check_input_file(path)


def test_empty_input_file_is_refused_as_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"")
    with refused(f"tuned weights {str(path)!r} is empty (0 bytes): it was not written completely; re-create it"):
        v.check_input_file(path, "tuned weights")


# --- OS errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "why"),
    [
        (errno.ENOSPC, "the disk is full (no space left on device); free some space or choose another folder"),
        (errno.EDQUOT, "the disk quota is exceeded; free some space or choose another folder"),
        (errno.EACCES, "permission denied; choose a folder you can write to"),
        (errno.EPERM, "permission denied; choose a folder you can write to"),
        (errno.EROFS, "the file system is read-only; choose another folder"),
        (errno.EIO, "Input/output error"),
    ],
)
def test_os_errors_say_why_and_what_to_do(code: int, why: str) -> None:
    err = OSError(code, os.strerror(code))
    assert v.os_error_message("/o/x.mp4", err) == f"could not write '/o/x.mp4': {why}"
    assert v.os_error_message("/o/x.mp4", err, "save") == f"could not save '/o/x.mp4': {why}"


def test_os_error_without_a_code_is_shown_as_is() -> None:
    assert v.os_error_message("x", OSError("broken pipe")) == "could not write 'x': broken pipe"


# --- tensors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_finite_tensors_pass(dtype: torch.dtype) -> None:
    v.check_finite_tensor(torch.tensor([0.0, -1e4, 3.5], dtype=dtype), "latents")


def test_nan_is_named_even_beside_infinity() -> None:
    with refused("loss holds NaN values; lower the learning rate", NonFiniteError):
        v.check_finite_tensor(torch.tensor([1.0, math.inf, math.nan]), "loss", hint="lower the learning rate")
    with refused("w holds NaN values", NonFiniteError):
        v.check_finite_tensor(torch.tensor([math.nan], dtype=torch.bfloat16), "w")


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinity_alone_is_called_infinite(value: float) -> None:
    with refused("latents holds infinite values", NonFiniteError):
        v.check_finite_tensor(torch.tensor([[0.0, value]], dtype=torch.float16), "latents")


@pytest.mark.parametrize("value", [torch.tensor([1, 2]), torch.tensor([True]), math.nan, None, [math.nan], "nan"])
def test_integer_tensors_and_non_tensors_are_not_checked(value: object) -> None:
    """Metadata and step counters sit beside tensors in state dicts; only float tensors can hold NaN."""
    v.check_finite_tensor(value, "x")


def test_state_dict_check_names_the_first_bad_tensor_and_its_file() -> None:
    tensors = {"a": torch.zeros(2), "step": 3, "b": torch.tensor([math.inf]), "c": torch.tensor([math.nan])}
    with refused("t.safetensors: tensor 'b' holds infinite values; re-tune", NonFiniteError):
        v.check_finite_tensors(tensors, "t.safetensors", hint="re-tune")
    with refused("t.safetensors: tensor 'c' holds NaN values", NonFiniteError):
        v.check_finite_tensors({"c": torch.tensor([math.nan])}, "t.safetensors")
    v.check_finite_tensors({"a": torch.ones(3), "n": torch.arange(3)}, "ok.safetensors")
