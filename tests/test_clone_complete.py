"""A clone alone is complete: nothing in the repository reads the folder beside the checkout."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, outside_checkout

#: the guard itself and this test name the folder they keep out
_ALLOWED = {"tests/conftest.py", "tests/test_clone_complete.py"}


def _tracked_text_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [
        f
        for f in out.splitlines()
        if f not in _ALLOWED
        and Path(REPO / f).suffix in {".py", ".md", ".json", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg", ""}
    ]


def test_no_tracked_file_points_beside_the_checkout() -> None:
    offenders = []
    for name in _tracked_text_files():
        path = REPO / name
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if "../shared" in text or '"shared" / "reference"' in text or "shared/reference" in text:
            offenders.append(name)
    assert not offenders, f"these files point at ../shared, which a user's clone does not have: {offenders}"


def test_official_examples_ship_with_their_notice() -> None:
    root = REPO / "official_examples"
    clips = sorted(p.stem for p in (root / "videos").glob("*.mp4"))
    configs = sorted(p.stem for p in (root / "configs").glob("*.yaml"))
    assert clips == configs == ["car-turn", "man-skiing", "man-surfing", "rabbit-watermelon"]
    assert "Apache" in (root / "NOTICE.md").read_text()


def test_guard_refuses_files_beside_the_checkout() -> None:
    beside = REPO.parent / "shared" / "reference" / "videos" / "man-skiing.mp4"
    assert outside_checkout(beside) and outside_checkout(str(REPO.parent / f"{REPO.name}-sibling"))
    assert not outside_checkout(REPO / "official_examples" / "videos" / "man-skiing.mp4")
    assert not outside_checkout(3)  # a file descriptor
    with pytest.raises(PermissionError, match="outside the checkout"):
        open(beside, "rb")  # noqa: SIM115 - the hook refuses before anything is opened
    with pytest.raises(PermissionError, match="outside the checkout"):
        subprocess.run(["cat", str(beside)], check=False)


def test_readme_links_resolve_inside_the_repository() -> None:
    """Every relative link and picture in the README and docs points at a file of the clone."""
    broken = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), REPO / "official_examples" / "NOTICE.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            if "://" in target:
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken, broken
