"""The judge report: runs/<name>/judge/report.md and report.html with PNG plots (matplotlib)."""

from __future__ import annotations

import re
from pathlib import Path

from distill.artifacts import write_text_atomic
from distill.run_folder import JudgeSummary
from distill.schema import ELEMENT_COLUMNS
from eval.stats import MOST_ITEMS, overall_score


def sampling_words(s) -> str:
    """`T=1.0, top-p 0.95` for anything with a temperature and a top_p (a GenerationConfig or
    a judge protocol record)."""
    get = s.get if isinstance(s, dict) else lambda k, d=None: getattr(s, k, d)
    return f"T={get('temperature')}, top-p {get('top_p', 1.0)}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scores(summary: JudgeSummary, path: Path) -> None:
    plt = _plt()
    models, crits = list(summary.models), summary.criteria + ["overall"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(models)), 3.8))
    width = 0.8 / len(crits)
    for i, c in enumerate(crits):
        stats = [summary.models[m]["overall" if c == "overall" else "criteria"] for m in models]
        stats = [s if c == "overall" else s[c] for s in stats]
        xs = [j + (i - (len(crits) - 1) / 2) * width for j in range(len(models))]
        means = [s["mean"] for s in stats]
        err = [[max(0, s["mean"] - s["low"]) for s in stats], [max(0, s["high"] - s["mean"]) for s in stats]]
        ax.bar(xs, means, width, yerr=err, capsize=2, label=c)
    ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 10.5)
    ax.set_ylabel("judge score (95% bootstrap interval)")
    ax.legend(fontsize=7, ncols=len(crits))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_age_groups(summary: JudgeSummary, path: Path) -> None:
    plt = _plt()
    models, groups = list(summary.models), list(summary.age_groups)
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(models)))
    left = [0.0] * len(models)
    for g in groups:
        share = []
        for m in models:
            counts = summary.models[m]["age_groups"]
            share.append(counts.get(g, 0) / max(sum(counts.values()), 1))
        ax.barh(models, share, left=left, label=f"{g}: {summary.age_groups[g]}")
        left = [a + b for a, b in zip(left, share)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of verdicts")
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_score_vs_loss(curve: dict, path: Path) -> None:
    plt = _plt()
    pts = curve["points"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([p["loss"] for p in pts], [p["score"] for p in pts],
                yerr=[[p["score"] - p["low"] for p in pts], [p["high"] - p["score"] for p in pts]], fmt="o-", capsize=3)
    for p in pts:
        ax.annotate(f"step {p['step']}", (p["loss"], p["score"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("training loss at the checkpoint")
    ax.set_ylabel("mean judge score")
    ax.set_title(f"Spearman rank correlation: {curve['spearman']:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ci(s: dict) -> str:
    return f"{s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}]" if s["mean"] == s["mean"] else "n/a"


# Characters that start inline markdown (emphasis, code, links and images, autolinks and raw
# HTML, entities, strikethrough, table cells): escaped with a backslash, which CommonMark
# defines for any ASCII punctuation. "![i](https://x/i.png)" in a fable then renders as those
# characters, not as an image fetched from x; "(" and "!" need nothing once "[" is escaped.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>&|~])")


def inert(text: str, n: int | None = None) -> str:
    """Model output (or a user's label) as markdown that stays text: one line, clipped to n
    characters, every character that starts inline markdown or HTML escaped, so no renderer
    turns it into a live link, image, script or table cell."""
    text = " ".join(str(text).split())
    if n is not None and len(text) > n:
        text = text[:n] + " …"
    return _MARKDOWN.sub(r"\\\1", text)


def sanity_line(control: dict | None, models: dict | None = None) -> list[str]:
    """Can this judge tell a fable from its own words shuffled? Read before the scores.
    With the ensemble's readability gate, says how many verdicts the gate decided."""
    if not control:
        return []
    if not control["pairs"]:
        return ["**Judge sanity: no shuffled-control pair got two valid verdicts; this judge is unchecked.**", ""]
    acc = control["accuracy"]
    verdict = "passes (goal ≥ 90%)" if acc >= 0.9 else "FAILS (goal ≥ 90%): read its scores as noise"
    return [f"**Judge sanity: it scored the real fable above its word-shuffled copy in {control['real_above']} of "
            f"{control['pairs']} pairs ({control['ties']} ties, counted as half; accuracy {acc:.0%}): it {verdict}.**",
            *_gate_line(models or {}), ""]


def control_lines(controls: dict | None, age_check: dict | None, train_fables: int = 0) -> list[str]:
    """One line per criterion control (the word-shuffled one has the sanity line): did the
    judge move the criterion it names the right way, in how many pairs (goal >= 90% each);
    then the age group against reading grade. `train_fables`: training fables of each
    distilled teacher the controls were also built from (judge.control_train_fables)."""
    lines = []
    for kind, c in (controls or {}).items():
        if kind == "shuffled words":
            continue
        if not c["pairs"]:
            lines.append(f"- **{kind}** ({c['criterion']}): no pair got two valid verdicts: unchecked.")
            continue
        ok = "passes" if c["accuracy"] >= 0.9 else "**fails**"
        lines.append(f"- **{kind}** ({c['criterion']}; the fable {c['what']}): {c['criterion']} scored lower than "
                     f"the real fable's in {c['real_above']} of {c['pairs']} pairs ({c['ties']} ties, counted as half; "
                     f"{c['accuracy']:.0%}): {ok} (goal ≥ 90%).")
    if age_check and age_check["fables"]:
        a = age_check
        one = a["distinct_groups"] < 2
        if one and not a.get("expected"):
            lines.append(f"- **age group**: the judge guessed one age group for all {a['fables']} fables: it does not "
                         "read the age from the text (no correlation with reading grade).")
        else:
            sign = ("rises with reading grade, the interval above zero" if a["low"] > 0 else
                    "does not rise with reading grade beyond chance (the interval includes or is below zero)")
            what = ("expected age group (its probabilities over the letters" +
                    ("; its likeliest letter was the same for every fable)" if one else ")")
                    if a.get("expected") else "age group")
            lines.append(f"- **age group**: Spearman of the judge's {what} with the fables' Flesch-Kincaid grade "
                         f"{a['rho']:.2f} [{a['low']:.2f}, {a['high']:.2f}] over {a['fables']} fables: the guessed "
                         f"age {sign}.")
    if not lines:
        return []
    sources = (f" (of the judged held-out prompts, and the first {train_fables} training fables of each distilled "
               "teacher)" if train_fables else "")
    return [f"Criterion controls: real teacher fables{sources} against copies changed to lower one criterion each.",
            "", *lines, ""]


def _gate_line(models: dict) -> list[str]:
    rows = [(m, s) for m, s in models.items() if s.get("gated") is not None]
    if not rows:
        return []
    from eval.controls import CONTROL_SUFFIX

    shuffled = [s for m, s in rows if s["role"] == "control" and m.endswith(CONTROL_SUFFIX)]
    others = [s for m, s in rows if s["role"] == "control" and not m.endswith(CONTROL_SUFFIX)]
    other = (f", {sum(s['gated'] for s in others)} of {sum(s['verdicts'] for s in others)} other control copies"
             if others else "")
    real = [f"{m} {s['gated']}/{s['verdicts']}" for m, s in rows if s["role"] != "control" and s["gated"]]
    return ["", f"The readability gate (the judge's own nats/token on the text above `judge.max_text_loss`) floored "
                f"{sum(s['gated'] for s in shuffled)} of {sum(s['verdicts'] for s in shuffled)} word-shuffled copies"
                f"{other} and, of the real fables, {', '.join(real) if real else 'none'}: the shuffled-word control "
                "tests the gate as much as the rubric scores."]


def judge_table(summary: JudgeSummary) -> list[str]:
    """Scores with intervals, one row per judged model: shared with the run report."""
    crits = summary.criteria
    lines = [*sanity_line(summary.shuffled_control, summary.models),
             *control_lines(summary.controls, summary.age_check, (summary.protocol or {}).get("control_train_fables", 0)),
             "| writer | fables | verdicts | failed | " + " | ".join(crits) + " | overall |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in crits) + " | --- |"]
    for m, s in summary.models.items():
        lines.append(f"| {m} | {s['fables']} | {s['verdicts']} | {s['failures']} | "
                     + " | ".join(_ci(s["criteria"][c]) for c in crits) + f" | **{_ci(s['overall'])}** |")
    j = summary.judge
    mode = {"geval": "G-Eval: scores weighted by the judge's probabilities over the scale",
            "ensemble": "G-Eval scores plus fluency, the scale's top minus the judge's nats/token on the fable",
            "checklist": "checklist: each criterion from yes/no questions, read as P(yes)",
            "pairwise": "pairwise: each criterion as the win rate against the teacher's fable, both orders",
            "likelihood": "likelihood: grammar, consistency and plot from the judge's nats/token on the fable alone "
                          "and after its prompt, creativity from the share of the nats in prompt and fable that the "
                          "fable brings",
            }.get(j.get("mode"), "the scores as written")
    lines += ["", f"Judge `{j['model']}` ({mode}; rubric `{j['rubric']}` {j['rubric_digest']}, T={j['temperature']}, "
                  f"{'JSON-schema output' if j['structured'] else 'free text'}); means over every valid verdict with "
                  "95% bootstrap intervals; failed verdicts are counted, not scored. "
                  f"{summary.protocol['prompts']} held-out prompts × up to {summary.protocol['samples']} "
                  f"completions per writer, each sampled at {sampling_words(summary.protocol)} as every writer in the run is."]
    lines += family_line(j["model"], list(summary.models))
    if j.get("mode") == "likelihood":
        lines.append("Its four criteria are the judge's own likelihoods: they move with the controls above (read "
                     "their lines), not with what a GPT-class judge prefers among fluent fables. Creativity counts "
                     "what the fable adds beyond its prompt, so it grows with length as well as with surprise. The age "
                     "group is a question a small judge answers near chance. Point `judge.base_url`/`OPENAI_BASE_URL` "
                     "at a strong judge for scores to compare with published ones.")
    elif "135m" in j["model"].lower() or "270m" in j["model"].lower():
        lines.append("**A judge this small wires the protocol up; its scores are close to noise.** Point "
                     "`judge.base_url`/`OPENAI_BASE_URL` at a strong judge (GPT-4o, a 70B model) for real numbers.")
    return lines


def family_line(judge_model: str, writers: list[str]) -> list[str]:
    """Where the judge (an embedded model) shares a tokenizer family with writers it judges:
    a model reads its own family's text at a lower loss and tends to prefer it."""
    from teacher.registry import TEACHERS

    family = {t.id: t.family for t in TEACHERS.values()}
    if judge_model not in family:
        return []

    def of(writer: str) -> str | None:  # "qwen2.5-coder-1.5b (teacher)", "qwen2.5-coder-1.5b-kd", ...
        ids = [i for i in family if writer.startswith(i)]
        return family[max(ids, key=len)] if ids else None

    same = [w for w in writers if w.endswith("(teacher)") and of(w) == family[judge_model]]
    if not same:
        return []
    return ["", f"The judge `{judge_model}` is of the {family[judge_model]} family, as are {', '.join(same)} and any "
                f"student trained from a {family[judge_model]} checkpoint: a judge reads its own family's text at a "
                "lower loss and tends to score it higher, its likelihood criteria most of all. Compare those writers "
                "with the others with that in mind."]


def _steps(steps) -> str:
    if not steps:
        return ""
    return f" (step {steps[0]})" if steps[0] == steps[1] else f" (steps {steps[0]}–{steps[1]})"


def loss_direction(curve: dict) -> str:
    """The score-against-loss figure in words: a judge that tracks learning scores later
    checkpoints higher as their training loss falls, a negative correlation of loss and score."""
    rho, lo, hi, n = (curve["spearman"], curve.get("spearman_low", float("nan")),
                      curve.get("spearman_high", float("nan")), len(curve["points"]))
    head = (f"Spearman rank correlation of training loss and judge score: {rho:.2f} (95% bootstrap interval over the "
            f"judged prompts [{lo:.2f}, {hi:.2f}], {n} checkpoints).")
    if rho != rho:
        return head + " **No direction**: the scores or the losses did not vary across checkpoints."
    way = ("scores **rose as loss fell**, the way the judge should move if it tracks learning" if rho < 0 else
           "scores **fell as loss fell**: the wrong way for a judge that tracks learning" if rho > 0 else
           "scores did not move with loss")
    if lo > 0 or hi < 0:
        return f"{head} {way[0].upper()}{way[1:]}; the interval excludes zero."
    sure = "but the interval includes zero: from these checkpoints and prompts, no direction is shown"
    return " ".join(filter(None, [f"{head} {way[0].upper()}{way[1:]}; {sure}.", items_needed(curve)]))


def items_needed(curve: dict) -> str:
    """What an interval with a side would take: judged items per checkpoint, projected from these."""
    have, need, n = curve.get("items"), curve.get("items_needed"), len(curve["points"])
    if not have:
        return ""
    if need is None:
        return (f"Projected from these {have} items per checkpoint, even {MOST_ITEMS:,} would leave zero inside: the "
                "checkpoints' scores are too close for this judge to order them. A stronger judge "
                "(`judge.base_url`) or checkpoints further apart in training are what it would take.")
    return (f"If these {have} items per checkpoint are typical, about {need} would show the direction "
            f"({(need - have) * n} more verdicts: `judge.prompts` × `judge.samples` ≥ {need}).")


def write_judge_report(jdir: Path, summary: JudgeSummary, judged: list[dict]) -> Path:
    jdir = Path(jdir)
    plot_scores(summary, jdir / "scores.png")
    plot_age_groups(summary, jdir / "age_groups.png")
    lines = ["# Judge report", "", "## Scores", "", *judge_table(summary), "", "![scores](scores.png)", "",
             "## Age group of the author, as the judge guesses it", "",
             "| writer | " + " | ".join(f"{k} ({v})" for k, v in summary.age_groups.items()) + " |",
             "| --- | " + " | ".join("---" for _ in summary.age_groups) + " |"]
    for m, s in summary.models.items():
        lines.append(f"| {m} | " + " | ".join(str(s["age_groups"].get(k, 0)) for k in summary.age_groups) + " |")
    lines += ["", "![age groups](age_groups.png)", "", "## Where each writer is weakest", "",
              "The lowest mean overall score by fable element (value, mean, fables):", "",
              "| writer | " + " | ".join(ELEMENT_COLUMNS) + " |", "| --- | " + " | ".join("---" for _ in ELEMENT_COLUMNS) + " |"]
    for m, s in summary.models.items():
        cells = []
        for e in ELEMENT_COLUMNS:
            worst = s["elements"].get(e) or []
            cells.append(inert(f"{worst[0][0]} ({worst[0][1]:.2f}, n={worst[0][2]})", 60) if worst else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    curve = summary.score_vs_loss or {}
    if curve.get("points"):
        plot_score_vs_loss(curve, jdir / "score_vs_loss.png")
        lines += ["", "## Score against training loss", "",
                  "| checkpoint | step | train loss (mean of the logged steps) | score | verdicts |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {p['label']} | {p['step']} | {p['loss']:.3f}{_steps(p.get('loss_steps'))} | "
                  f"{_ci({**p, 'mean': p['score']})} | {p['verdicts']} |" for p in curve["points"]]
        lines += ["", loss_direction(curve), "", "![score against loss](score_vs_loss.png)"]
    lines += ["", "## Judge failures", ""]
    fails = {m: s for m, s in summary.models.items() if s["failures"]}
    if not fails:
        lines.append("Every reply was a valid verdict.")
    else:
        lines += ["| writer | failed | reasons |", "| --- | --- | --- |"]
        lines += [f"| {inert(m, 80)} | {s['failures']} of {s['fables']} | "
                  + "; ".join(f"{inert(r, 300)} ×{n}" for r, n in s["failure_reasons"]) + " |" for m, s in fails.items()]
    lines += ["", "## Fables side by side", ""]
    writers = list(summary.models)
    first = {}
    for j in judged:
        first.setdefault((j["prompt_id"], j["model"]), j)
    for pid in list(dict.fromkeys(j["prompt_id"] for j in judged))[:3]:
        some = next(j for j in judged if j["prompt_id"] == pid)
        lines += [f"**Prompt**: {inert(some['prompt'], 400)}", "", "| writer | fable | overall |", "| --- | --- | --- |"]
        for w in writers:
            j = first.get((pid, w))
            if j:
                score = f"{overall_score(j):.2f}" if j["verdict"] else "failed"
                lines.append(f"| {inert(w, 80)} | {inert(j['fable'], 500)} | {score} |")
        lines.append("")
    md = "\n".join(lines) + "\n"
    write_text_atomic(jdir / "report.md", md)
    write_text_atomic(jdir / "report.html", to_html(md, "Judge report"))
    return jdir / "report.md"


def to_html(md: str, title: str) -> str:
    """HTML of a report. Raw HTML in the markdown is escaped, not passed through (commonmark
    passes it by default): the reports quote fables, and fables are model output."""
    import html

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    title = html.escape(title)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top}"
             "img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head><body>{body}</body></html>\n"
