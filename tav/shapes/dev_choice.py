"""Choosing tuning settings on the development set: ``python -m tav.shapes.dev_choice RUN_DIR...``.

Why: a setting picked by looking at the test set would make the test set's verdicts optimistic.
Each RUN_DIR is one ``evaluate --set dev`` run with one tuning setting (named by the directory);
its tuned variants are renamed ``variant@setting`` and compared, paired on the same clips and
edits, with per-frame editing and with each other. Untuned variants do not depend on the setting
and are taken from the first run that has them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

from . import report, stats
from .evaluate import ALL, LABELS


def combine(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """All runs' rows in one list; tuned variants tagged with their run's setting."""
    out: list[dict[str, Any]] = []
    untuned_seen: set[str] = set()
    for setting, rows in runs.items():
        for v in sorted({r["variant"] for r in rows}):
            if ALL[v].tuned:
                out += [{**r, "variant": f"{v}@{setting}"} for r in rows if r["variant"] == v]
            elif v not in untuned_seen:
                untuned_seen.add(v)
                out += [r for r in rows if r["variant"] == v]
    return out


def tables(rows: list[dict[str, Any]], baseline: str = "per_frame") -> str:
    """Means of every (tagged) variant, and each tuned setting paired against ``baseline`` and the others."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    tuned = [v for v in variants if "@" in v]
    pairs = [(v, baseline) for v in tuned] + [(a, b) for i, a in enumerate(tuned) for b in tuned[i + 1 :]]
    summary = report.summarize(rows, variants)
    summary["differences"] = [{"a": a, "b": b, "what": "", **_paired(rows, a, b)} for a, b in pairs]
    labels = {v: LABELS.get(v.split("@")[0], v) + (f" @ {v.split('@')[1]}" if "@" in v else "") for v in variants}
    return "\n\n".join(
        ["## Means", report.means_table(summary, labels), "## Paired differences", report.differences_table(summary)]
    )


def _paired(rows: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    return {
        m: dataclasses.asdict(stats.paired_interval(rows, a, b, lambda r, m=m: report.value(r, m)))
        for m in report.METRICS
    }


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="evaluate --set dev output folders, one per setting")
    ap.add_argument("--out", type=Path, required=True, help="folder for rows.json and tables.md")
    args = ap.parse_args(argv)
    runs = {}
    for d in args.runs:
        files = sorted(d.glob("shard_*/rows.json")) or [d / "rows.json"]
        runs[d.name] = [r for f in files for r in json.loads(f.read_text())]
    rows = combine(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    text = tables(rows)
    (args.out / "tables.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
