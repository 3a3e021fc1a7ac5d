"""The evaluation's statistics on cases whose answer is known."""

import numpy as np
import pytest

from tav.shapes.stats import Interval, cluster_bootstrap, paired_differences, paired_interval, verdict


def test_two_singleton_clusters_give_the_exact_bootstrap_quantiles() -> None:
    """Resampling {0, 1} gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 95 % interval is [0, 1]."""
    iv = cluster_bootstrap([0.0, 1.0], ["a", "b"])
    assert (iv.mean, iv.lo, iv.hi, iv.videos, iv.clips) == (0.5, 0.0, 1.0, 2, 2)


def test_clusters_not_videos_are_resampled() -> None:
    """Copying every video of a clip ten times adds no information: the interval must not narrow."""
    rng = np.random.default_rng(0)
    means = rng.normal(0.5, 0.2, size=12)
    values = [m + d for m in means for d in (-0.05, 0.05)]
    clips = [i for i in range(12) for _ in range(2)]
    once = cluster_bootstrap(values, clips)
    tenfold = cluster_bootstrap(values * 10, clips * 10)
    assert tenfold.videos == 10 * once.videos and tenfold.clips == once.clips == 12
    assert tenfold.mean == pytest.approx(once.mean)
    assert (tenfold.lo, tenfold.hi) == pytest.approx((once.lo, once.hi), abs=1e-12)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(300):
        clip_effect = rng.normal(0.0, 1.0, size=20)
        values = np.repeat(clip_effect, 3) + rng.normal(0.0, 0.5, size=60)
        iv = cluster_bootstrap(values, np.repeat(np.arange(20), 3), n_boot=1000, seed=trial)
        hits += iv.lo <= 0.0 <= iv.hi
    assert 0.88 <= hits / 300 <= 0.99  # percentile bootstrap with 20 clusters runs slightly narrow


def test_non_finite_values_are_dropped_and_one_clip_is_undecided() -> None:
    iv = cluster_bootstrap([1.0, float("nan"), 3.0], ["a", "a", "a"])
    assert iv.mean == 2.0 and iv.videos == 2 and iv.clips == 1 and np.isnan(iv.lo)
    assert verdict(iv, 1) == "undecided"
    with pytest.raises(ValueError, match="cluster labels"):
        cluster_bootstrap([1.0, 2.0], ["a"])


def test_pairs_match_clip_edit_and_seed_not_row_order() -> None:
    rows = [
        {"variant": "b", "clip": "c1", "prompt": "p", "seed": 0, "x": 1.0},
        {"variant": "a", "clip": "c2", "prompt": "p", "seed": 0, "x": 5.0},
        {"variant": "a", "clip": "c1", "prompt": "p", "seed": 0, "x": 3.0},
        {"variant": "b", "clip": "c2", "prompt": "p", "seed": 0, "x": 4.0},
        {"variant": "a", "clip": "c3", "prompt": "p", "seed": 0, "x": 9.0},  # no partner: left out
        {"variant": "b", "clip": "c1", "prompt": "p", "seed": 1, "x": 0.0},  # other seed: left out
    ]
    diffs, clips = paired_differences(rows, "a", "b", lambda r: r["x"])
    assert sorted(zip(clips, diffs, strict=True)) == [("c1", 2.0), ("c2", 1.0)]
    iv = paired_interval(rows, "a", "b", lambda r: r["x"])
    assert (iv.mean, iv.lo, iv.hi) == (1.5, 1.0, 2.0)


def test_pairing_removes_the_clips_own_spread() -> None:
    """a = b + 0.1 on every clip, while clips differ a lot: the paired interval is exactly [0.1, 0.1]."""
    base = np.random.default_rng(2).uniform(0, 1, size=30)
    rows = [
        {"variant": v, "clip": f"c{i}", "prompt": "p", "seed": 0, "x": b + (0.1 if v == "a" else 0.0)}
        for i, b in enumerate(base)
        for v in ("a", "b")
    ]
    iv = paired_interval(rows, "a", "b", lambda r: r["x"])
    assert (iv.mean, iv.lo, iv.hi) == pytest.approx((0.1, 0.1, 0.1))
    assert verdict(iv, 1) == "holds" and verdict(iv, -1) == "does not hold"
    unpaired = cluster_bootstrap([r["x"] for r in rows if r["variant"] == "a"], [f"c{i}" for i in range(30)])
    assert unpaired.hi - unpaired.lo > 0.1


@pytest.mark.parametrize(
    ("lo", "hi", "sign", "want"),
    [(0.1, 0.3, 1, "holds"), (0.1, 0.3, -1, "does not hold"), (-0.1, 0.3, 1, "undecided"), (-0.3, -0.1, -1, "holds")],
)
def test_verdict_reads_the_interval(lo: float, hi: float, sign: int, want: str) -> None:
    assert verdict(Interval(0.0, lo, hi, 10, 5), sign) == want


def test_format_is_mean_and_interval() -> None:
    assert Interval(0.834, 0.781, 0.879, 60, 30).fmt() == "0.83 [0.78, 0.88]"
    assert Interval(11.46, 9.04, 13.91, 60, 30).fmt(1) == "11.5 [9.0, 13.9]"


def test_docs_blocks_are_replaced_and_the_rest_kept() -> None:
    from tav.shapes.report import fill_blocks

    doc = "intro\n<!-- report:means -->\nold table\n<!-- /report:means -->\noutro\n"
    assert fill_blocks(doc, {"means": "new", "claims": "x"}) == (
        "intro\n<!-- report:means -->\nnew\n<!-- /report:means -->\noutro\n"
    )
