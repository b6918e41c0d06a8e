"""The run report's stage table (eval/report.py)."""

from eval.report import stage_table


def test_the_stage_table_counts_engine_starts_and_spans_overlapping_stages():
    stages = [
        {"stage": "generate", "teacher": "a", "status": "ran", "wall_s": 100.0, "started": 1000.0,
         "engine_starts": 1, "engine_start_s": 30.0},
        {"stage": "generate", "teacher": "b", "status": "ran", "wall_s": 50.0, "started": 1010.0,
         "engine_starts": 2, "engine_start_s": 12.5},
        {"stage": "train-kd", "teacher": "a", "status": "ran", "wall_s": 40.0, "started": 1100.0},
    ]
    lines = stage_table(stages, ray_heads=1)
    assert lines[2] == "| generate | a | ran | 100.0 | 1 | 30.0 |"
    assert lines[4] == "| train-kd | a | ran | 40.0 |  |  |"
    # a and b generated side by side: 140 s from first start to last end, not 190
    assert lines[-1].startswith("140 s from the first stage's start to the last one's end; 3 engine start(s) took 42 s")
    assert "1 Ray head(s) started." in lines[-1]
    old = [{"stage": "report", "teacher": "", "status": "ran", "wall_s": 2.0}]  # a ledger from before "started"
    assert stage_table(old)[-1].startswith("2 s from") and "Ray head" not in stage_table(old)[-1]
