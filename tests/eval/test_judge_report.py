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
