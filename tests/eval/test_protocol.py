"""Summaries of judged fables: failures are counted, never averaged; intervals; age groups."""

import pytest

from eval.judge import Rubric
from eval.judge_report import write_judge_report
from eval.protocol import heldout_prompts, summarize


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
    summary = {"models": summarize(rows, Rubric.load().names), "criteria": Rubric.load().names,
               "age_groups": dict(Rubric.load().age_groups), "score_vs_loss": {"points": []},
               "judge": {"model": "smollm2-135m", "rubric": "fable-v1", "rubric_digest": "x", "temperature": 0.0,
                         "structured": True},
               "protocol": {"prompts": 1, "samples": 4, "temperature": 1.0}}
    report = write_judge_report(tmp_path, summary, rows).read_text()
    assert "| s | 4 | 2 | 2 |" in report and "truncated JSON" in report and "close to noise" in report
    assert (tmp_path / "scores.png").stat().st_size > 1000 and (tmp_path / "age_groups.png").exists()
    assert "<table>" in (tmp_path / "report.html").read_text()


def test_heldout_prompts_keep_first_sample_in_writing_order():
    rows = [{"prompt_id": p, "sample_index": s} for p, s in [(7, 0), (7, 1), (3, 0), (7, 2), (3, 1), (9, 0)]]
    assert [(r["prompt_id"], r["sample_index"]) for r in heldout_prompts(rows)] == [(7, 0), (3, 0), (9, 0)]
