"""Summaries of judged fables: failures are counted, never averaged; intervals; age groups.
The local judge server stays on loopback."""

import pytest

from distill.run_folder import JudgeSummary
from eval.rubric import Rubric
from eval.judge_report import write_judge_report
from eval.protocol import summarize


def judged(model, scores, age="B", reason="ok", **elements):
    base = {"character": "fox", "trait": "kind", "setting": "forest", "conflict": "c", "resolution": "r", "moral": "m"}
    verdict = None if scores is None else {"scores": dict(zip(["grammar", "creativity", "consistency", "plot"], scores)),
                                           "age_group": age}
    return {"model": model, "role": "kd", "teacher": "t", "prompt_id": "p1", "sample": 0, "prompt": "Write.",
            "fable": "A fable.", "verdict": verdict, "reason": reason, **{**base, **elements}}


def test_failures_are_counted_and_left_out_of_the_means(tmp_path):
    rows = [judged("s", [8, 6, 8, 6]), judged("s", [4, 4, 4, 4], age="C", setting="sea"),
            judged("s", None, reason="truncated JSON (the reply ends before the object closes)"),
            judged("s", None, reason="score grammar=11 outside 1..10"), judged("t (teacher)", [9, 9, 9, 9])]
    s = summarize(rows, Rubric.load().names)["s"]
    assert s["fables"] == 4 and s["verdicts"] == 2 and s["failures"] == 2
    assert s["criteria"]["grammar"]["mean"] == 6.0 and s["overall"]["mean"] == pytest.approx(5.5)
    assert s["overall"]["low"] <= 5.5 <= s["overall"]["high"]
    assert dict(s["failure_reasons"]) == {"truncated JSON (the reply ends before the object closes)": 1, "score grammar=11 outside 1..10": 1}
    assert s["age_groups"] == {"B": 1, "C": 1}
    assert s["elements"]["setting"][0] == ("sea", 4.0, 1)
    summary = JudgeSummary(models=summarize(rows, Rubric.load().names), criteria=Rubric.load().names,
                           age_groups=dict(Rubric.load().age_groups), score_vs_loss={"points": []},
                           judge={"model": "smollm2-135m", "rubric": "fable-v1", "rubric_digest": "x",
                                  "temperature": 0.0, "structured": True},
                           protocol={"prompts": 1, "samples": 4, "temperature": 1.0}, shuffled_control=None)
    report = write_judge_report(tmp_path, summary, rows).read_text()
    assert "| s | 4 | 2 | 2 |" in report and "truncated JSON" in report and "close to noise" in report
    assert (tmp_path / "scores.png").stat().st_size > 1000 and (tmp_path / "age_groups.png").exists()
    assert "<table>" in (tmp_path / "report.html").read_text()


PLANTED = 'Once a fox <script>alert("x")</script> met a crow <img src=x onerror="alert(1)"> & left.'


def live_html(page: str) -> list[str]:
    """Every element or attribute in an HTML page that would run code or fetch something
    (the reports' own images are local PNG plots)."""
    from html.parser import HTMLParser

    found = []

    class Finder(HTMLParser):
        def handle_starttag(self, tag, attrs):
            local_plot = tag == "img" and str(dict(attrs).get("src", "")).endswith(".png") and "/" not in dict(attrs)["src"]
            found.extend([f"<{tag}>"] * (tag in ("script", "img", "iframe", "object") and not local_plot))
            found.extend(f"{tag}[{k}]" for k, _ in attrs if k.startswith("on"))

    Finder().feed(page)
    return found


def test_fables_reach_the_html_report_as_text_never_as_markup(tmp_path):
    row = {**judged("s", [8, 6, 8, 6]), "fable": PLANTED}
    summary = JudgeSummary(models=summarize([row], Rubric.load().names), criteria=Rubric.load().names,
                           age_groups=dict(Rubric.load().age_groups), score_vs_loss={"points": []},
                           judge={"model": "j", "rubric": "fable-v1", "rubric_digest": "x", "temperature": 0.0,
                                  "structured": True},
                           protocol={"prompts": 1, "samples": 1, "temperature": 1.0}, shuffled_control=None)
    md = write_judge_report(tmp_path, summary, [row]).read_text()
    page = (tmp_path / "report.html").read_text()
    assert live_html(page) == [] and "<script" not in md and "<img" not in md
    # Still there, as text a reader sees.
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "onerror=" in page
    assert live_html(f"<p>{PLANTED}</p>") == ["<script>", "<img>", "img[onerror]"]  # the finder finds them
