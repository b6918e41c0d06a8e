"""The judge report's words about its own judge."""

from eval.judge_report import family_line


def test_the_report_names_the_teachers_that_share_the_judges_family():
    writers = ["qwen2.5-coder-1.5b (teacher)", "qwen2.5-coder-1.5b-kd", "smollm2-135m (teacher)",
               "gemma3-270m (teacher)", "qwen2.5-coder-1.5b (teacher) (shuffled)"]
    line = " ".join(family_line("qwen2.5-coder-0.5b", writers))
    assert "of the qwen2.5 family, as are qwen2.5-coder-1.5b (teacher) and any student" in line
    assert "smollm2" not in line and "gemma" not in line
    assert family_line("smollm2-135m", ["gemma3-270m (teacher)"]) == []
    assert family_line("gpt-4o", writers) == []  # a judge of no known family: nothing said


def test_a_likelihood_judges_report_says_what_its_scores_follow(tmp_path):
    from eval.judge_report import judge_table
    from eval.protocol import JudgeSummary
    from eval.rubric import RUBRIC_CHECKLIST, Rubric

    rubric = Rubric.load(RUBRIC_CHECKLIST)
    summary = JudgeSummary(models={}, criteria=rubric.names, age_groups=dict(rubric.age_groups),
                           score_vs_loss={"points": []},
                           judge={"model": "smollm2-135m", "rubric": rubric.name, "rubric_digest": "x", "mode": "likelihood",
                                  "temperature": 0.0, "structured": True},
                           protocol={"prompts": 1, "samples": 1, "temperature": 1.0}, shuffled_control=None)
    text = "\n".join(judge_table(summary))
    assert "likelihood: grammar, consistency and plot from the judge's nats/token" in text
    assert "move with the controls" in text and "close to noise" not in text


def test_the_gate_line_is_written_only_where_a_gate_ran():
    from eval.judge_report import _gate_line
    from eval.protocol import summarize

    from teacher.prompts import ELEMENTS

    rows = [{"model": "w", "role": "teacher", "teacher": "w", "prompt_id": "a", "sample": 0, "reason": "ok",
             **{k: "x" for k in ELEMENTS},
             "verdict": {"scores": {"grammar": 4.0}, "age_group": "B", **gate}} for gate in ({}, {})]
    ungated = summarize(rows, ["grammar"])
    assert ungated["w"]["gated"] is None and _gate_line(ungated) == []
    rows[0]["verdict"]["gated"], rows[1]["verdict"]["gated"] = True, False
    gated = summarize(rows, ["grammar"])
    assert gated["w"]["gated"] == 1 and "readability gate" in " ".join(_gate_line(gated))


def test_the_age_line_reads_the_expected_age_when_the_letter_never_changes():
    from eval.judge_report import control_lines

    nan = float("nan")
    flat = {"fables": 30, "rho": nan, "low": nan, "high": nan, "distinct_groups": 1, "expected": False}
    assert "one age group for all 30 fables" in "\n".join(control_lines({}, flat))
    leaning = {**flat, "rho": 0.31, "low": 0.02, "high": 0.58, "expected": True}
    line = "\n".join(control_lines({}, leaning))
    assert "expected age group" in line and "likeliest letter was the same for every fable" in line
    assert "0.31 [0.02, 0.58] over 30 fables" in line and "the interval above zero" in line
