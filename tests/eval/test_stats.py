import numpy as np
import pytest

from eval.stats import bootstrap_ci, breakdown, overall_score, rankdata, spearman


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_data():
    assert bootstrap_ci([7, 7, 7]) == (7.0, 7.0, 7.0)
    rng = np.random.default_rng(1)
    small, large = rng.integers(1, 11, 20), rng.integers(1, 11, 2000)
    m, lo, hi = bootstrap_ci(small)
    assert m == pytest.approx(small.mean()) and lo < m < hi
    M, LO, HI = bootstrap_ci(large)
    assert HI - LO < (hi - lo) / 4
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    assert all(np.isnan(x) for x in bootstrap_ci([]))


def test_ranks_and_spearman_by_hand():
    assert rankdata([10, 30, 20, 20]).tolist() == [1.0, 4.0, 2.5, 2.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x 1,2,3 ; y 1,3,2 -> 1 - 6*2/(3*8) = 0.5
    assert spearman([1, 2, 3], [5, 9, 7]) == pytest.approx(0.5)
    assert np.isnan(spearman([1, 2], [2, 1])) and np.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_breakdown_puts_the_weakest_value_first_and_skips_failures():
    items = [{"setting": "forest", "s": 8}, {"setting": "forest", "s": 6}, {"setting": "sea", "s": 3},
             {"setting": "sea", "s": None}, {"setting": "hill", "s": 9}]
    rows = breakdown(items, "setting", lambda it: it["s"])
    assert rows == [("sea", 3.0, 1), ("forest", 7.0, 2), ("hill", 9.0, 1)]


def test_overall_score_is_the_criteria_mean_and_none_for_a_failure():
    assert overall_score({"verdict": {"scores": {"grammar": 8, "creativity": 5, "plot": 6}}}) == 19 / 3
    assert overall_score({"verdict": None}) is None


def test_paired_bootstrap_interval_excludes_zero_only_for_a_consistent_difference():
    from eval.stats import paired_bootstrap

    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    lower = paired_bootstrap([x - 0.1 for x in a], a)
    assert abs(lower["mean"] + 0.1) < 1e-12 and lower["high"] < 0 and lower["a_lower"] == 6 and lower["n"] == 6
    mixed = paired_bootstrap([x + d for x, d in zip(a, [0.5, -0.5, 0.4, -0.4, 0.3, -0.3])], a)
    assert mixed["low"] < 0 < mixed["high"] and mixed["a_lower"] == 3
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_spearman_bootstrap_on_a_clean_trend_and_on_noise():
    from eval.stats import spearman_bootstrap

    rng = np.random.default_rng(0)
    loss = [4.0, 3.0, 2.0, 1.0]
    trend = [[5 - l + 0.01 * rng.standard_normal() for _ in range(20)] for l in loss]  # score rises as loss falls
    r = spearman_bootstrap(loss, trend)
    assert r["rho"] == -1.0 and r["high"] == -1.0 and r["points"] == 4
    noise = [[float(rng.integers(1, 6)) for _ in range(20)] for _ in loss]
    n = spearman_bootstrap(loss, noise)
    assert n["low"] < n["rho"] + 1e-9 and n["high"] > n["low"]
    assert np.isnan(spearman_bootstrap(loss[:2], trend[:2])["rho"])  # fewer than 3 points


def test_spearman_bootstrap_of_no_points_is_nan_not_an_error():
    """A run judged with judge.checkpoints off has no score-against-loss points (it crashed the
    judge stage before: found by the mix student's end-to-end test)."""
    import math

    from eval.stats import spearman_bootstrap

    r = spearman_bootstrap([], [])
    assert r["points"] == 0 and all(math.isnan(r[k]) for k in ("rho", "low", "high"))


def test_items_for_direction_finds_the_size_whose_interval_has_a_side_of_zero():
    from eval.stats import items_for_direction, spearman_bootstrap

    rng = np.random.default_rng(0)
    loss = [0.8, 0.7, 0.6, 0.5]
    trend = np.array([3.0, 3.1, 3.2, 3.3])[:, None] + rng.normal(0, 1.0, (4, 6))  # noisy: zero inside at 6
    assert spearman_bootstrap(loss, trend)["high"] >= 0
    n = items_for_direction(loss, trend, n_boot=300)
    assert n is not None and 6 < n <= 1024 and (n // 6) & (n // 6 - 1) == 0  # 6 doubled
    assert items_for_direction(loss, trend, most=6) is None  # not affordable within `most`
    clean = np.array([3.0, 3.1, 3.2, 3.3])[:, None] + rng.normal(0, 0.01, (4, 6))
    assert items_for_direction(loss, clean) == 6  # already shown
    tied = np.tile(rng.normal(3, 0.4, 6), (4, 1))  # every checkpoint the same scores: no projection shows a side
    assert items_for_direction(loss, tied, n_boot=100) is None
    assert items_for_direction(loss[:2], trend[:2]) is None
    holed = trend.copy()
    holed[0, :] = np.nan
    assert items_for_direction(loss, holed) is None  # no item judged at every point
