"""Mutation testing of one core module with mutmut, against that module's own unit tests.

``python scripts/mutants.py windows`` copies ``tav/`` and ``tests/`` into ``build/mutants/windows``,
writes a ``[tool.mutmut]`` section that mutates only ``tav/windows.py`` and selects only the test
files in :data:`TESTS` (mutmut then runs, per mutant, just the tests that cover the mutated
function), runs it at low CPU priority and prints the score. Each module has its own folder, so
runs of different modules can run one after another and their results stay for inspection.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the unit test files that own each core module: a mutant must be killed by these, not by a slow test elsewhere
TESTS: dict[str, list[str]] = {
    "windows": ["tests/test_windows.py"],
    "control": ["tests/test_control.py"],
    "attention": ["tests/test_attention.py"],
    # ddim's windowed and ControlNet paths (predict_windows, predict's residuals) are tested beside windows and control
    "ddim": ["tests/test_ddim.py", "tests/test_windows.py", "tests/test_control.py"],
    # the first-window GroupNorm statistics (VideoGroupNorm._shared_stats) exist for windows and are tested there
    "inflation": ["tests/test_inflation.py", "tests/test_windows.py"],
    "tuning": ["tests/test_tuning.py"],
    "weights": ["tests/test_weights.py"],
    "validation": ["tests/test_validation.py", "tests/test_reliability.py", "tests/test_ranges.py"],
    "memory_plan": ["tests/test_memory_plan.py"],
    "native": ["tests/test_native.py"],
}

#: tests that check the call stack, which mutmut's trampoline (one more frame per mutated function)
#: changes: they fail on the unmutated code under mutmut, so they are left out there (they run in `make test`)
UNDER_TRAMPOLINE = ["tests/test_validation.py::test_warn_emits_a_tav_warning_pointing_at_the_caller"]


def prepare(module: str) -> Path:
    """A fresh copy of the sources and tests with a mutmut config for ``module``.

    mutmut's cached verdicts are dropped: it keeps them when only the tests changed, so a new test
    would not kill the survivors it was written for.
    """
    work = ROOT / "build" / "mutants" / module
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "e2e", "artifacts")
    for folder in ("tav", "tests", "official_examples"):  # some tests read the shipped example configs
        shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
    deselect = [arg for test in UNDER_TRAMPOLINE for arg in ("--deselect", test)]
    tests = json.dumps(TESTS[module] + ["-x", "-q", "-p", "no:cacheprovider", *deselect])
    (work / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["tav"]\n'
        'also_copy = ["official_examples"]\n'
        f'only_mutate = ["tav/{module}.py"]\n'
        f"pytest_add_cli_args_test_selection = {tests}\n"
        "mutate_only_covered_lines = false\n"
        'process_isolation = "forkserver"\n'  # torch is not fork-safe once a test has started its threads
    )
    return work


def score(work: Path) -> dict[str, int]:
    """Counts per mutmut status (killed, survived, timeout, ...) from ``mutmut results --all``."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, capture_output=True, text=True
    ).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        if ":" in line:
            status = line.rsplit(":", 1)[1].strip()
            counts[status] = counts.get(status, 0) + 1
    return counts


def survivors(work: Path) -> list[str]:
    """The mutants an earlier, finished run of this folder left alive (survived, timed out, no tests).

    "not checked" ones are left out: after a ``--survivors`` run they are the ones killed before it.
    """
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, capture_output=True, text=True
    ).stdout
    rows = [line.rsplit(":", 1) for line in out.splitlines() if ":" in line]
    return [name.strip() for name, status in rows if status.strip() not in ("killed", "not checked")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(TESTS), help=f"any of {', '.join(TESTS)} (default: all)")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="rerun only what the module's last run left alive, in a fresh copy with today's tests "
        "(tests only get stronger, so what they killed stays killed); the score line counts the earlier kills",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="PATTERN",
        default=[],
        help="run only the mutants matching these patterns (fnmatch), e.g. after changing one function: "
        "'tav.tuning.x_trainable_names*'; the score line then counts just those",
    )
    args = parser.parse_args()
    if args.only and args.survivors:
        parser.error("--only and --survivors do not combine: --only names the mutants to run")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for module in args.modules:
        if module not in TESTS:
            parser.error(f"unknown module {module!r}: use one of {', '.join(TESTS)}")
        earlier = ROOT / "build" / "mutants" / module
        alive: list[str] = []
        if args.survivors:
            if not (earlier / "mutants").is_dir():
                parser.error(f"--survivors: {module} has no earlier run in {earlier}")
            source = f"tav/{module}.py"
            if (earlier / source).read_bytes() != (ROOT / source).read_bytes():
                parser.error(
                    f"--survivors: {source} changed since its last run (mutants are renumbered); run it in full"
                )
            total_before = sum(score(earlier).values())
            alive = survivors(earlier)
            if not alive:
                print(f"{module}: no survivors to rerun")
                continue
        if args.only:
            alive = list(args.only)
        work = prepare(module)
        env["TAV_MUTANTS_DIR"] = str(work)  # the suite's guard then allows mutmut's files beside the copy
        start = time.monotonic()
        subprocess.run(
            ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run", "--max-children", "2", *alive],
            cwd=work,
            env=env,
        )
        counts = score(work)
        if args.only:
            counts = {k: v for k, v in counts.items() if k != "not checked"}
            killed, total = counts.get("killed", 0), sum(counts.values())
        elif args.survivors:  # the fresh copy knows every mutant; only the rerun ones have a verdict
            rerun = {k: v for k, v in counts.items() if k != "not checked"}
            killed = total_before - len(alive) + rerun.get("killed", 0)
            total = total_before
            counts = {"rerun": len(alive), **rerun}
        else:
            killed = counts.get("killed", 0)
            total = sum(counts.values())  # timeouts are not counted as killed: rerun them before trusting them
        print(
            f"{module}: {killed}/{total} killed ({100 * killed / max(total, 1):.0f} %) in {time.monotonic() - start:.0f} s"
        )
        print(f"  {counts}; survivors: cd {work.relative_to(ROOT)} && mutmut results; mutmut show <name>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
