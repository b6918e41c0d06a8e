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
