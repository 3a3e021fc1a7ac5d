"""The evaluated variants (the paper's comparison, diagnostics, options) and their labels.

Why its own module: the evaluation (:mod:`tav.shapes.evaluate`) runs them and the report
(:mod:`tav.shapes.report`) labels them; with both importing this, neither imports the other's
caller, and the package's import graph stays acyclic (``tests/test_import_graph.py``).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Variant:
    """How one variant edits: which model (2-D, or inflated with ``attention``/``norm``), tuned, inverted."""

    label: str
    inflated: bool = True
    attention: str = "sparse_causal"
    norm: str = "video"
    tuned: bool = True
    inverted: bool = True

    @property
    def model_key(self) -> tuple:
        """Variants with equal keys edit with the same model (and the same inversion)."""
        return (self.attention, self.norm, self.tuned) if self.inflated else ("2d",)


#: the paper's comparison (Sec. 5.3, Fig. 8, Tab. 1)
PAPER = {
    "tav": Variant("Tune-A-Video (full)"),
    "no_sparse_causal": Variant("w/o sparse-causal attn", attention="frame"),
    "no_inversion": Variant("w/o DDIM inversion", inverted=False),
    "no_tuning": Variant("w/o tuning", tuned=False),
    "per_frame": Variant("per-frame editing (2-D)", inflated=False, tuned=False),
}
#: diagnostics: each changes one thing of a paper variant, to say why a claim does (not) hold
DIAGNOSTIC = {
    "no_tuning_frame_attn": Variant("untuned, per-frame attn", attention="frame", tuned=False),
    "no_tuning_frame_norm": Variant("untuned, per-frame GroupNorm", norm="frame", tuned=False),
    "no_tuning_no_inversion": Variant("untuned, from noise", tuned=False, inverted=False),
    "tav_frame_norm": Variant("TAV, per-frame GroupNorm", norm="frame"),
}
#: options that could let Tune-A-Video win (issue 13): each one change from a variant above
OPTIONS = {
    "tav_self": Variant("TAV, keys incl. current frame", attention="sparse_causal_self"),
    "tav_frame_norm_self": Variant(
        "TAV, per-frame GroupNorm, keys incl. current frame", attention="sparse_causal_self", norm="frame"
    ),
}
ALL = {**PAPER, **DIAGNOSTIC, **OPTIONS}
VARIANTS = tuple(PAPER)
LABELS = {k: v.label for k, v in ALL.items()}
