"""Statistics for judged scores: pure functions, no I/O."""

from __future__ import annotations

import numpy as np


def overall_score(item: dict) -> float | None:
    """A judged item's overall score: the mean of its criteria; None for a failed verdict."""
    if not item.get("verdict"):
        return None
    s = item["verdict"]["scores"]
    return sum(s.values()) / len(s)


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    a = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_bootstrap(a, b, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> dict:
    """The mean of a - b over paired observations (e.g. two students' held-out KL on the
    same fables), with its percentile bootstrap interval (pairs resampled together) and how
    many pairs have a below b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length ({a.size} vs {b.size})")
    m, lo, hi = bootstrap_ci(a - b, n_boot=n_boot, level=level, seed=seed)
    return {"mean": m, "low": lo, "high": hi, "n": int(a.size), "a_lower": int((a < b).sum()), "level": level}


def rankdata(x) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    for v in np.unique(x):
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation (nan with fewer than 3 points or a constant side)."""
    if len(x) < 3:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall(x, y) -> float:
    """Kendall's tau-b (nan with fewer than 3 points or a constant side)."""
    from scipy.stats import kendalltau

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(kendalltau(x, y).statistic)


def percentile_interval(boots, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates, the non-finite ones (a resample with
    a constant side) left out; nan, nan when none is finite."""
    boots = [b for b in boots if np.isfinite(b)]
    a = (1 - level) / 2
    return (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))) if boots else (float("nan"),) * 2


def spearman_ci(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Spearman correlation of paired points and its percentile bootstrap interval, the
    points resampled in pairs (nan throughout with fewer than 3 points)."""
    return _paired_ci(spearman, x, y, n_boot, level, seed)


def _paired_ci(corr, x, y, n_boot, level, seed) -> tuple[float, float, float]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rho = corr(x, y)
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        boots = [corr(x[i], y[i]) for i in (rng.integers(0, len(x), len(x)) for _ in range(n_boot if len(x) >= 3 else 0))]
    return (rho, *percentile_interval(boots, level))


def spearman_bootstrap(x, scores, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                       draws: int | None = None) -> dict:
    """Spearman correlation of x (one value per point, e.g. a checkpoint's training loss)
    with each point's mean score, and its percentile bootstrap interval. `scores` is
    [points x items]: the same judged items at every point (NaN where a verdict failed);
    items are resampled together across points, since the points share their prompts.
    `draws`: items per resample (default: as many as were judged), for items_for_direction."""
    if not len(x):  # no points (judge.checkpoints off): nothing to correlate
        return {"rho": float("nan"), "low": float("nan"), "high": float("nan"), "points": 0}
    m = np.asarray(scores, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != len(x):
        raise ValueError(f"scores must be {len(x)} points x items, got shape {m.shape}")
    with np.errstate(all="ignore"):
        rho = spearman(x, np.nanmean(m, axis=1)) if m.size else float("nan")
        rng = np.random.default_rng(seed)
        boots = [spearman(x, np.nanmean(m[:, rng.integers(0, m.shape[1], draws or m.shape[1])], axis=1))
                 for _ in range(n_boot if m.size else 0)]
    lo, hi = percentile_interval(boots, level)
    return {"rho": rho, "low": lo, "high": hi, "points": len(x)}


MOST_ITEMS = 1024  # items per point the projection looks as far as: past it, no judge stage is affordable


def items_for_direction(x, scores, most: int = MOST_ITEMS, n_boot: int = 1000, level: float = 0.95,
                        seed: int = 0) -> int | None:
    """How many judged items per point would give spearman_bootstrap's interval a side of zero,
    if the judged items are typical of more like them: its bootstrap drawn at sizes n, 2n, 4n, ...
    up to `most`. None when even `most` leaves zero inside (the points' means are tied or too
    close for any affordable judge stage), or when there is nothing to project from (fewer than
    3 points, no complete item)."""
    m = np.asarray(scores, dtype=np.float64)
    if len(x) < 3 or m.ndim != 2 or m.shape[0] != len(x):
        return None
    m = m[:, ~np.isnan(m).any(axis=0)]  # items judged at every point: a draw needs a score at each
    n = m.shape[1]
    while 0 < n <= most:
        r = spearman_bootstrap(x, m, n_boot, level, seed, draws=n)
        if r["low"] > 0 or r["high"] < 0:
            return n
        n *= 2
    return None


def breakdown(items: list[dict], element: str, score) -> list[tuple[str, float, int]]:
    """Mean score per value of one fable element (e.g. every 'setting'), worst first:
    [(value, mean, count)]. `score(item)` gives an item's score or None (failed verdict)."""
    groups: dict[str, list[float]] = {}
    for it in items:
        s = score(it)
        if s is not None:
            groups.setdefault(str(it[element]), []).append(s)
    rows = [(v, float(np.mean(s)), len(s)) for v, s in groups.items()]
    return sorted(rows, key=lambda r: (r[1], -r[2], r[0]))
