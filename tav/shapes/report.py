"""The evaluation report with uncertainty: every mean and paired difference with its interval.

Why: a table of means invites reading noise as findings. Here every number comes with its 95 %
interval over clips (:mod:`tav.shapes.stats`), every comparison is paired (same clip, edit and
seed), and each claim of the paper gets a verdict fixed by its interval. The same summary, saved
as JSON, is what the README table and FINDINGS.md are rendered from, so they cannot drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import stats
from .variants import LABELS

#: metric -> (column title, digits, sign: +1 when larger is better)
METRICS: dict[str, tuple[str, int, int]] = {
    "textual": ("textual ↑", 2, 1),
    "motion_px": ("motion px ↓", 1, -1),
    "consistency": ("agreement ↑", 2, 1),
    "change_gap": ("\\|change ratio − 1\\| ↓", 2, -1),
    "size_spread": ("size spread px ↓", 1, -1),
}


def value(row: dict[str, Any], metric: str) -> float:
    """A row's metric; ``change_gap`` is how far frame-to-frame change is from the source's (ratio 1)."""
    if metric == "change_gap":
        return abs(row["change_ratio"] - 1.0)
    return float(row[metric])


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim as a paired difference: ``metric(a) - metric(b)`` has sign ``sign``."""

    text: str
    a: str
    b: str
    metric: str
    sign: int = 1


#: the paper's claims (Sec. 5.3, Fig. 8, Tab. 1), each one paired difference
PAPER_CLAIMS = (
    Claim("w/o DDIM inversion the motion is lost (larger position error)", "no_inversion", "tav", "motion_px"),
    Claim("w/o sparse-causal attention fewer frames agree", "tav", "no_sparse_causal", "consistency"),
    Claim("w/o sparse-causal attention sizes vary more", "no_sparse_causal", "tav", "size_spread"),
    Claim("w/o tuning the result is less smooth (change further from the source's)", "no_tuning", "tav", "change_gap"),
    Claim("per-frame editing: fewer frames agree than with TAV", "tav", "per_frame", "consistency"),
    Claim("per-frame editing: sizes vary more than with TAV", "per_frame", "tav", "size_spread"),
    Claim("TAV is more faithful to the edited prompt than per-frame editing (Tab. 1)", "tav", "per_frame", "textual"),
)
#: variants that could let Tune-A-Video win, each checked against per-frame editing
OPTIONS = ("tav_frame_norm", "tav_self", "tav_frame_norm_self")


def option_claims(option: str) -> tuple[Claim, ...]:
    return (
        Claim(f"`{option}` is more faithful than per-frame editing", option, "per_frame", "textual"),
        Claim(f"`{option}`: more frames agree than with per-frame editing", option, "per_frame", "consistency"),
        Claim(f"`{option}`: sizes vary less than with per-frame editing", "per_frame", option, "size_spread"),
    )


#: paired comparisons reported on every metric: (a, b, what a - b isolates)
COMPARISONS = (
    ("tav", "per_frame", "the paper's method vs per-frame editing"),
    ("tav", "no_sparse_causal", "sparse-causal attention (vs per-frame attention)"),
    ("tav", "no_inversion", "DDIM inversion (vs seeded noise)"),
    ("tav", "no_tuning", "tuning"),
    ("tav_frame_norm", "tav", "per-frame GroupNorm (vs pooled over frames)"),
    ("tav_self", "tav", "the current frame among the keys"),
    ("tav_frame_norm_self", "tav_frame_norm", "the current frame among the keys, with per-frame GroupNorm"),
    ("tav_frame_norm", "per_frame", "TAV with per-frame GroupNorm vs per-frame editing"),
    ("tav_self", "per_frame", "TAV with the current frame among the keys vs per-frame editing"),
    ("tav_frame_norm_self", "per_frame", "TAV with both options vs per-frame editing"),
    ("no_tuning_frame_attn", "per_frame", "GroupNorm over all frames alone, on the 2-D model"),
    ("no_tuning_frame_norm", "per_frame", "sparse-causal attention alone, on the 2-D model"),
    ("no_inversion", "no_tuning_no_inversion", "tuning, when inversion does not carry the motion"),
)


#: subsets reported separately: where a variant's mean comes from (edit kinds, one or two objects)
GROUPS = {
    **{f"{k} edits": (lambda r, k=k: r["kind"] == k) for k in ("colour", "shape", "both", "background")},
    "one object": lambda r: r["objects"] == 1,
    "two objects": lambda r: r["objects"] == 2,
}
GROUP_METRICS = ("textual", "motion_px")


def summarize(rows: Sequence[dict[str, Any]], variants: Sequence[str]) -> dict[str, Any]:
    """Means (overall and per :data:`GROUPS`), paired differences and claim verdicts, JSON-ready."""
    present = [v for v in variants if any(r["variant"] == v for r in rows)]
    means = {v: {m: dataclasses.asdict(_mean(rows, v, m)) for m in METRICS} for v in present}
    diffs = [
        {
            "a": a,
            "b": b,
            "what": what,
            **{m: dataclasses.asdict(stats.paired_interval(rows, a, b, lambda r, m=m: value(r, m))) for m in METRICS},
        }
        for a, b, what in COMPARISONS
        if a in present and b in present
    ]
    claims = []
    for group, items in [("paper", PAPER_CLAIMS)] + [(o, option_claims(o)) for o in OPTIONS]:
        for c in items:
            if c.a in present and c.b in present:
                iv = stats.paired_interval(rows, c.a, c.b, lambda r, m=c.metric: value(r, m))
                claims.append(
                    {"group": group, **dataclasses.asdict(c), "verdict": stats.verdict(iv, c.sign), **_iv(iv)}
                )
    groups = {
        g: {
            v: {m: dataclasses.asdict(_mean(sub, v, m)) for m in GROUP_METRICS}
            for v in present
            if any(r["variant"] == v for r in sub)
        }
        for g, keep in GROUPS.items()
        if (sub := [r for r in rows if keep(r)])
    }
    return {"means": means, "groups": groups, "differences": diffs, "claims": claims}


def _mean(rows: Sequence[dict[str, Any]], variant: str, metric: str) -> stats.Interval:
    mine = [r for r in rows if r["variant"] == variant]
    return stats.cluster_bootstrap([value(r, metric) for r in mine], [r["clip"] for r in mine])


def _iv(iv: stats.Interval) -> dict[str, Any]:
    return {"interval": dataclasses.asdict(iv)}


def fmt(d: dict[str, Any], metric: str) -> str:
    """An interval dict from :func:`summarize`, spelled as everywhere else."""
    return stats.Interval(**d).fmt(METRICS[metric][1])


def means_table(summary: dict[str, Any], labels: dict[str, str], variants: Sequence[str] | None = None) -> str:
    """Markdown: one row per variant, each metric as mean [95 % interval over clips]."""
    variants = [v for v in (variants or summary["means"]) if v in summary["means"]]
    head = "| variant | " + " | ".join(t for t, _, _ in METRICS.values()) + " |"
    lines = [head, "|---" * (len(METRICS) + 1) + "|"]
    for v in variants:
        cells = " | ".join(fmt(summary["means"][v][m], m) for m in METRICS)
        lines.append(f"| {labels.get(v, v)} (`{v}`) | {cells} |")
    return "\n".join(lines)


def claims_table(summary: dict[str, Any], groups: Sequence[str] | None = None) -> str:
    """Markdown: each claim, its verdict and the paired difference it rests on."""
    lines = ["| claim | verdict | paired difference a − b [95 % interval] |", "|---|---|---|"]
    for c in summary["claims"]:
        if groups is None or c["group"] in groups:
            diff = stats.Interval(**c["interval"]).fmt(METRICS[c["metric"]][1])
            lines.append(f"| {c['text']} | **{c['verdict']}** | {c['metric']}: {c['a']} − {c['b']} = {diff} |")
    return "\n".join(lines)


def differences_table(summary: dict[str, Any]) -> str:
    """Markdown: every paired comparison on every metric."""
    head = "| a − b | what it isolates | " + " | ".join(t for t, _, _ in METRICS.values()) + " |"
    lines = [head, "|---" * (len(METRICS) + 2) + "|"]
    for d in summary["differences"]:
        cells = " | ".join(fmt(d[m], m) for m in METRICS)
        lines.append(f"| `{d['a']}` − `{d['b']}` | {d['what']} | {cells} |")
    return "\n".join(lines)


def groups_table(summary: dict[str, Any], metric: str, labels: dict[str, str]) -> str:
    """Markdown: one row per variant, one column per group, ``metric``'s mean [interval]."""
    groups = list(summary["groups"])
    lines = ["| variant | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for v in summary["means"]:
        cells = [fmt(summary["groups"][g][v][metric], metric) if v in summary["groups"][g] else "" for g in groups]
        lines.append(f"| {labels.get(v, v)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(summary: dict[str, Any], labels: dict[str, str], header: str) -> str:
    """The whole markdown report: header (settings), means, claims, paired differences."""
    n = next(iter(next(iter(summary["means"].values())).values()))
    return "\n".join(
        [
            header,
            "",
            f"Every number: mean over videos [95 % bootstrap interval, resampling the {n['clips']} clips]. "
            "Differences are paired: same clip, same edit, same seed. A claim **holds** when its whole "
            "interval lies on its side of 0, **does not hold** when it lies wholly on the other side, and is "
            "**undecided** otherwise.",
            "",
            "Metrics (analyzer-judged): **textual** = fraction of frames showing exactly the edited prompt's "
            "colours, shapes and background; **motion px** = mean distance between each object's position in the "
            "output and in the source; **agreement** = fraction of frames showing the video's majority content; "
            "**|change ratio − 1|** = how far the mean frame-to-frame pixel change is from the source's; "
            "**size spread** = std of an object's fitted size across frames.",
            "",
            "## Means",
            "",
            means_table(summary, labels),
            "",
            "## The paper's claims",
            "",
            claims_table(summary, ["paper"]),
            "",
            "## Options that could let Tune-A-Video win, against per-frame editing",
            "",
            claims_table(summary, list(OPTIONS)),
            "",
            "## Paired differences",
            "",
            differences_table(summary),
            "",
            "## By edit kind and number of objects",
            "",
            "Textual faithfulness:",
            "",
            groups_table(summary, "textual", labels),
            "",
            "Motion px (does the edit keep the source's positions?):",
            "",
            groups_table(summary, "motion_px", labels),
            "",
        ]
    )


def fill_blocks(text: str, blocks: dict[str, str]) -> str:
    """Replace what lies between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->`` with ``blocks[NAME]``."""
    for name, body in blocks.items():
        start, end = f"<!-- report:{name} -->", f"<!-- /report:{name} -->"
        if text.count(start) != 1 or text.count(end) != 1:
            continue
        head, rest = text.split(start)
        text = f"{head}{start}\n{body}\n{end}{rest.split(end)[1]}"
    return text


def main(argv: list[str] | None = None) -> None:
    """``python -m tav.shapes.report SUMMARY.json DOC.md...``: regenerate the docs' tables from a report."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("summary", type=Path, help="summary.json written by python -m tav.shapes.evaluate")
    ap.add_argument("docs", nargs="+", type=Path, help="markdown files with <!-- report:means/claims --> blocks")
    args = ap.parse_args(argv)
    summary = json.loads(args.summary.read_text())
    blocks = {"means": means_table(summary, LABELS), "claims": claims_table(summary)}
    for doc in args.docs:
        doc.write_text(fill_blocks(doc.read_text(), blocks))
        print(f"updated {doc}")


if __name__ == "__main__":
    main()
