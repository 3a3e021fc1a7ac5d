"""README's quality table and FINDINGS.md say what the committed test-set report says (parsed, not recomputed)."""

import json
import re
from pathlib import Path

from tav.shapes import report
from tav.shapes.evaluate import LABELS

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "docs" / "shapes_eval"
INTERVAL = re.compile(r"-?\d+\.\d+ \[-?\d+\.\d+, -?\d+\.\d+\]")


def _summary() -> dict:
    return json.loads((EVAL / "summary.json").read_text())


def _all_intervals(summary: dict) -> set[str]:
    out = set()
    for by_metric in summary["means"].values():
        out |= {report.fmt(iv, m) for m, iv in by_metric.items()}
    for d in summary["differences"]:
        out |= {report.fmt(d[m], m) for m in report.METRICS}
    out |= {report.fmt(c["interval"], c["metric"]) for c in summary["claims"]}
    for by_variant in summary["groups"].values():
        out |= {report.fmt(iv, m) for by_metric in by_variant.values() for m, iv in by_metric.items()}
    return out


def test_committed_report_is_the_test_set_with_at_least_30_clips() -> None:
    summary = _summary()
    assert summary["meta"]["set"] == "test" and summary["meta"]["clips"] >= 30
    rows = json.loads((EVAL / "rows.json").read_text())
    assert {r["clip"] for r in rows} == {f"gen{s}" for s in range(2000, 2000 + summary["meta"]["clips"])}
    assert all(iv["clips"] == summary["meta"]["clips"] for iv in summary["means"]["per_frame"].values())


def test_readme_table_and_findings_claims_are_rendered_from_the_report() -> None:
    summary = _summary()
    readme = (ROOT / "README.md").read_text()
    findings = (EVAL / "FINDINGS.md").read_text()
    assert report.means_table(summary, LABELS) in readme
    assert report.claims_table(summary) in findings
    assert (EVAL / "report.md").read_text().count("**") > 0


def test_every_interval_quoted_in_readme_and_findings_is_in_the_report() -> None:
    known = _all_intervals(_summary())
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The shapes world") : readme.index("## Tests")]
    for name, text in (("README.md", section), ("FINDINGS.md", (EVAL / "FINDINGS.md").read_text())):
        quoted = INTERVAL.findall(text)
        assert quoted, name
        assert not [q for q in quoted if q not in known], name
