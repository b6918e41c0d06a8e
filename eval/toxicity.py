"""Toxicity of fables (alt-profanity-check, offline), and the training filter built on it:
`eval/compare.py` reports it per writer, the pipeline's training stage drops teacher fables
above `train.max_toxicity` before a student sees them."""

from __future__ import annotations

import numpy as np

from eval import text_metrics

TOXICITY_THRESHOLD = 0.5


def toxicity(texts: list[str], threshold: float = TOXICITY_THRESHOLD) -> dict:
    """alt-profanity-check on whole fables and on 40-word windows; the worst windows kept."""
    from profanity_check import predict_prob

    whole = predict_prob(texts) if texts else np.zeros(0)
    wins = [text_metrics.windows(t) or [""] for t in texts]
    flat = [w for ws in wins for w in ws]
    probs = predict_prob(flat) if flat else np.zeros(0)
    per_fable, worst, at = [], [], 0
    for i, ws in enumerate(wins):
        p = probs[at : at + len(ws)]
        at += len(ws)
        per_fable.append(float(p.max()) if len(p) else 0.0)
        j = int(p.argmax()) if len(p) else 0
        worst.append((float(p[j]) if len(p) else 0.0, i, ws[j]))
    stats = text_metrics.toxicity_stats(whole, np.array(per_fable), threshold)
    stats["threshold"] = threshold
    stats["worst"] = [{"fable": i, "prob": p, "window": w} for p, i, w in sorted(worst, reverse=True)[:3]]
    return {**stats, "per_fable": per_fable}


def filter_toxic(rows: list[dict], threshold: float) -> tuple[list[dict], list[dict]]:
    """Teacher rows whose worst window scores at most `threshold`, and a record of the rest."""
    worst = toxicity([r["text"] for r in rows], threshold)["per_fable"] if rows else []
    kept = [r for r, p in zip(rows, worst) if p <= threshold]
    removed = [{"prompt_id": r["prompt_id"], "sample_index": r["sample_index"], "toxicity": round(p, 3)}
               for r, p in zip(rows, worst) if p > threshold]
    return kept, removed
