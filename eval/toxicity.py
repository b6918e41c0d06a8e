"""Toxicity of fables, and the training filter built on it: `eval/compare.py` reports it per
writer (compare.toxicity names the classifier), the pipeline's training stage drops teacher
fables above `train.max_toxicity` (alt-profanity-check) before a student sees them.

Classifiers: "profanity", alt-profanity-check, offline (the default: no hub needed);
"toxigen-roberta", the ToxiGen RoBERTa classifier (tomh/toxigen_roberta, arXiv 2203.09509)
with which arXiv 2401.08491 measured the seed teachers, from the hub or its cache, read from
the safetensors variant its hub repository holds (refs/pr/1; main has pickled weights only).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eval import text_metrics

TOXICITY_THRESHOLD = 0.5
CLASSIFIERS = {
    "profanity": "alt-profanity-check (offline; a linear model of profanity)",
    "toxigen-roberta": "ToxiGen RoBERTa (tomh/toxigen_roberta), the classifier arXiv 2401.08491 measured the seed teachers with",
}
TOXIGEN = ("tomh/toxigen_roberta", "refs/pr/1")  # repository, revision holding model.safetensors


def check_classifier(name: str) -> None:
    """Fail before any work, naming the classifier and the fix, when it cannot be loaded."""
    if name not in CLASSIFIERS:
        raise ValueError(f"compare.toxicity={name!r} is not one of {', '.join(CLASSIFIERS)}")
    if name != "toxigen-roberta":
        return
    repo, revision = TOXIGEN
    if Path(repo).is_dir():
        return
    from teacher.registry import in_cache_or_on_hub

    try:
        in_cache_or_on_hub(repo, revision)
    except Exception as e:  # offline, unreachable
        raise _unavailable(e) from None


def _unavailable(e: Exception) -> FileNotFoundError:
    repo, revision = TOXIGEN
    return FileNotFoundError(
        f"compare.toxicity='toxigen-roberta': {repo}@{revision} is neither in the hub cache nor reachable "
        f"({type(e).__name__}); download it where the hub is reachable (`hf download {repo} --revision "
        f"{revision}`) and point HF_HOME at that cache, or use compare.toxicity='profanity'")


@functools.cache
def _toxigen():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    repo, revision = TOXIGEN
    try:
        tok = AutoTokenizer.from_pretrained(repo, revision=revision)
        model = AutoModelForSequenceClassification.from_pretrained(repo, revision=revision, use_safetensors=True)
    except OSError as e:
        raise _unavailable(e) from None
    labels = {v.lower(): int(k) for k, v in model.config.id2label.items()}
    toxic = labels.get("toxic", labels.get("label_1", 1))  # the repository names its classes LABEL_0/1
    return tok, model.eval(), toxic


def _toxigen_prob(texts: list[str], batch: int = 32) -> np.ndarray:
    import torch

    tok, model, toxic = _toxigen()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=512, return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits.float(), -1)[:, toxic].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def predictor(name: str) -> Callable[[list[str]], np.ndarray]:
    """Probability that each text is toxic, by the named classifier."""
    check_classifier(name)
    if name == "toxigen-roberta":
        return _toxigen_prob
    from profanity_check import predict_prob

    return predict_prob


def toxicity(texts: list[str], threshold: float = TOXICITY_THRESHOLD, classifier: str = "profanity") -> dict:
    """The classifier on whole fables and on 40-word windows; the worst windows kept."""
    predict_prob = predictor(classifier)
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
    stats["classifier"] = classifier
    stats["worst"] = [{"fable": i, "prob": p, "window": w} for p, i, w in sorted(worst, reverse=True)[:3]]
    return {**stats, "per_fable": per_fable}


def filter_toxic(rows: list[dict], threshold: float) -> tuple[list[dict], list[dict]]:
    """Teacher rows whose worst window scores at most `threshold`, and a record of the rest."""
    worst = toxicity([r["text"] for r in rows], threshold)["per_fable"] if rows else []
    kept = [r for r, p in zip(rows, worst) if p <= threshold]
    removed = [{"prompt_id": r["prompt_id"], "sample_index": r["sample_index"], "toxicity": round(p, 3)}
               for r, p in zip(rows, worst) if p > threshold]
    return kept, removed
