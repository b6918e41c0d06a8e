"""Summaries of judged fables: failures are counted, never averaged; intervals; age groups.
The local judge server stays on loopback."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.run_folder import JudgeSummary
from eval.rubric import Rubric
from eval.judge_report import write_judge_report
from eval.protocol import score_vs_loss, summarize
from benchmarks.fuzz import MARKUP, cell_text, live_html
from tests.eval.conftest import GOOD


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


PLANTED = ('Once a fox <script>alert("x")</script> met a crow <img src=x onerror="alert(1)"> & left. '
           "[a prize](https://evil.example/win) ![i](https://evil.example/i.png) <https://evil.example/auto> "
           "[ref][1] *bold* `code` | a cell | ~~gone~~\n\n[1]: https://evil.example/ref")


def test_fables_reach_the_html_report_as_text_never_as_markup(tmp_path):
    """Fables, prompts and the judge's failure reasons carry raw HTML and markdown links,
    images, autolinks and references: none of it renders live."""
    from eval.verdict import parse_verdict

    _, hostile_reason = parse_verdict(json.dumps({**GOOD, "age_group": "![t](//evil.example/a.png)"}))
    rows = [{**judged("s", [8, 6, 8, 6]), "fable": PLANTED, "prompt": "Write [x](https://evil.example/p)."},
            judged("s", None, reason=hostile_reason), judged("s", None, reason="malformed: " + PLANTED)]
    summary = JudgeSummary(models=summarize(rows, Rubric.load().names), criteria=Rubric.load().names,
                           age_groups=dict(Rubric.load().age_groups), score_vs_loss={"points": []},
                           judge={"model": "j", "rubric": "fable-v1", "rubric_digest": "x", "temperature": 0.0,
                                  "structured": True},
                           protocol={"prompts": 1, "samples": 1, "temperature": 1.0}, shuffled_control=None)
    md = write_judge_report(tmp_path, summary, rows).read_text()
    page = (tmp_path / "report.html").read_text()
    assert live_html(page) == []
    # The markdown file itself, rendered as a viewer that passes raw HTML through would.
    from markdown_it import MarkdownIt

    assert live_html(MarkdownIt("commonmark").enable("table").render(md)) == []
    # Still there, as text a reader sees.
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "onerror=" in page
    assert "![i](https://evil.example/i.png)" in page and "![t](//evil.example/a.png)" in page
    assert live_html(f"<p>{PLANTED}</p>") == ["<script>", "<img>", "img[onerror]"]  # the finder finds them
    from eval.judge_report import to_html

    assert live_html(to_html(PLANTED, "raw")) == ["<a href>", "<img>", "<a href>", "<a href>"]  # and markdown's


@given(parts=st.lists(MARKUP | st.text(max_size=6), max_size=30))
@settings(max_examples=300, deadline=None)
def test_any_text_made_inert_renders_as_exactly_itself(parts):
    """What a reader of the HTML sees is the text itself, on one line; nothing in it is live."""
    from eval.judge_report import inert, to_html

    text = "".join(parts)
    page = to_html(f"| fable |\n| --- |\n| {inert(text)} |\n", "t")
    assert live_html(page) == []
    cells = cell_text(page)
    # CommonMark replaces NUL with U+FFFD (its spec, for security); nothing else changes.
    assert cells == [" ".join(text.split()).replace("\x00", "\ufffd")]




def test_each_checkpoint_reads_the_loss_of_its_own_steps():
    from eval.protocol import checkpoint_loss

    # logged every 5 steps, saved every 4: each checkpoint reads a step logged since the one
    # before (8 reads step 5, 12 reads 10: the nearest value gave both step 10's); the first,
    # with none logged yet, the nearest logged step, and the report names which step it read
    history = [{"step": s, "loss": l} for s, l in [(5, 1.0), (10, 0.8), (15, 0.6)]]
    got = [checkpoint_loss(history, prev, step) for prev, step in [(0, 4), (4, 8), (8, 12), (12, 16)]]
    assert got == [(1.0, [5, 5]), (1.0, [5, 5]), (0.8, [10, 10]), (0.6, [15, 15])]
    # every step logged: the mean over the steps since the previous checkpoint
    dense = [{"step": s, "loss": float(s)} for s in range(1, 17)]
    assert checkpoint_loss(dense, 4, 8) == (6.5, [5, 8]) and checkpoint_loss(dense, 12, 16) == (14.5, [13, 16])
    assert checkpoint_loss([], 0, 4)[1] == [] and checkpoint_loss([{"step": 3, "eval_loss": 1}], 0, 4)[1] == []


def test_the_score_against_loss_line_says_which_way_scores_moved_and_whether_it_is_shown():
    from eval.judge_report import loss_direction

    def line(rho, lo, hi):
        return loss_direction({"spearman": rho, "spearman_low": lo, "spearman_high": hi, "points": [1, 2, 3, 4]})

    assert "Scores **rose as loss fell**" in line(-0.8, -1.0, -0.4) and "the interval excludes zero" in line(-0.8, -1, -0.4)
    assert "Scores **fell as loss fell**: the wrong way" in line(0.74, 0.2, 1.0) and "excludes zero" in line(0.74, 0.2, 1)
    assert "no direction is shown" in line(-0.4, -1.0, 0.6) and "0.74" in line(0.74, -0.2, 1.0)
    assert "**No direction**" in line(float("nan"), float("nan"), float("nan"))


def test_an_interval_that_includes_zero_says_how_many_items_would_show_the_direction():
    from eval.judge_report import loss_direction

    base = {"spearman": -0.4, "spearman_low": -1.0, "spearman_high": 0.8, "points": [1, 2, 3, 4], "items": 6}
    assert "about 48 would show the direction (168 more verdicts" in loss_direction({**base, "items_needed": 48})
    assert "even 1,024 would leave zero inside" in loss_direction({**base, "items_needed": None})
    assert "would show" not in loss_direction({**base, "spearman_high": -0.2, "items_needed": 6})


def test_the_score_against_loss_curve_projects_the_items_it_needs_from_its_own_verdicts():
    import numpy as np

    rng = np.random.default_rng(1)
    curve, judged = [], []
    for i, (loss, mean) in enumerate([(0.7, 3.0), (0.6, 3.1), (0.5, 3.2), (0.4, 3.3)]):
        curve.append({"label": f"kd@{i}", "step": i, "loss": loss, "items": [{"prompt_id": f"p{k}", "sample": 0} for k in range(4)]})
        for k in range(4):
            s = float(mean + rng.normal(0, 0.3))
            judged.append({"model": f"kd@{i}", "prompt_id": f"p{k}", "sample": 0, "verdict": {"scores": {"grammar": s}}})
    got = score_vs_loss(curve, judged)
    assert got["items"] == 4 and got["spearman_low"] <= 0 <= got["spearman_high"]
    assert got["items_needed"] is not None and 4 < got["items_needed"] <= 1024


def test_a_teacher_fable_is_marked_ended_only_if_it_stopped_before_its_token_limit(tmp_path):
    """The cut-short control's input (eval/controls.py): the limit is the teacher's own
    (configs/tiny.toml: 32 new tokens), read from the rows as generated."""
    from distill import config
    from distill.run_folder import RunFolder
    from distill.schema import write_table_atomic
    from eval.protocol import judge_items_for_teacher
    from tests.distill.test_stream import fable

    cfg = config.load("configs/tiny.toml", ["judge.prompts=3"])
    tr = cfg.teachers[0]
    limit = tr.generation.max_new_tokens
    rows = [fable(i, split="eval", n=n) for i, n in enumerate((limit, limit - 1, 1))]
    folder = RunFolder(tmp_path).teacher(tr.teacher)
    folder.mkdir(parents=True)
    write_table_atomic(rows, folder / "00000.parquet", vocab_size=64)
    items = judge_items_for_teacher(cfg, tr, RunFolder(tmp_path))
    assert {it["prompt_id"]: it["ended"] for it in items} == {"p0": False, "p1": True, "p2": True}


def test_control_sources_are_the_first_training_fables_one_per_prompt_read_no_further(tmp_path):
    """judge.control_train_fables: the distilled teacher's training fables the controls are
    also built from, sample 0 of its first prompts, marked for the controls only; the shards
    past them are not read (a production teacher's training set need not fit in memory)."""
    from distill import config
    from distill.run_folder import RunFolder
    from distill.schema import write_table_atomic
    from eval.protocol import control_source_items
    from tests.distill.test_stream import fable

    cfg = config.load("configs/tiny.toml", ["judge.control_train_fables=3", "generation.train_samples=2"])
    tr = cfg.teachers[0]
    folder = RunFolder(tmp_path).teacher(tr.teacher)
    folder.mkdir(parents=True)
    rows = [{**fable(i // 2, n=tr.generation.max_new_tokens if i == 2 else 5), "sample_index": i % 2}
            for i in range(8)]  # prompts p0..p3, two samples each; p1's first stopped at its limit
    write_table_atomic(rows[:6], folder / "00000.parquet", vocab_size=64)
    (folder / "00001.parquet").write_bytes(b"not parquet")  # never opened
    items = control_source_items(cfg, tr, RunFolder(tmp_path))
    assert [(it["prompt_id"], it["sample"], it["ended"]) for it in items] == [("p0", 0, True), ("p1", 0, False),
                                                                              ("p2", 0, True)]
    assert {it["role"] for it in items} == {"calibration"} and {it["model"] for it in items} == {f"{tr.teacher} (teacher)"}
    none = config.load("configs/tiny.toml", ["judge.control_train_fables=0"])
    assert control_source_items(none, none.teachers[0], RunFolder(tmp_path)) == []
