"""`python -m benchmarks.run --render-only`: BENCHMARKS.md rewritten from the kept figures,
measuring nothing (what a session does after copying in a GPU check's results)."""

import json

from benchmarks import run


def test_render_only_rewrites_the_page_from_the_kept_figures_and_the_gpu_results(tmp_path):
    fuzz = {"cases_per_target": 3, "wall_s": 1.0, "measured": "2026-11-27 00:00 UTC on test",
            "targets": {"config and --set": {"accepted": 1, "clean_error": 2, "traceback": 0, "accepted_garbage": 0}}}
    (tmp_path / "B.json").write_text(json.dumps({"fuzz": fuzz}))
    run.main(["--render-only", "--out", str(tmp_path / "B.md")])
    page = (tmp_path / "B.md").read_text()
    assert page.startswith("# Benchmarks") and "fuzzing 2026-11-27 00:00 UTC on test" in page
    assert "## Training step on a GPU" in page  # from benchmarks/results/, kept in the repository
    assert json.loads((tmp_path / "B.json").read_text()) == {"fuzz": fuzz}  # nothing measured, nothing rewritten


def test_the_lora_section_gives_each_engine_its_tokens_per_second_and_ratio_to_no_lora():
    from benchmarks.render import render_lora

    d = {"adapters": 5, "sequences": 16, "max_new_tokens": 64, "base": {"tokens": 1024, "generate_s": 32.0},
         "per_token": {"tokens": 1024, "generate_s": 80.0}, "grouped": {"tokens": 1024, "generate_s": 40.0}}
    page = "\n".join(render_lora(d))
    assert "| LoRA, vLLM's per-token products | 1024 | 80.0 | 12.8 | 0.40 |" in page
    assert "| LoRA, one product per adapter (teacher/lora_cpu.py) | 1024 | 40.0 | 25.6 | 0.80 |" in page


def test_the_decoding_section_counts_prompt_tokens_against_the_compute_bound():
    """A prompt token costs the model what a generated one does: the share of the bound counts both."""
    from benchmarks.render import render_decoding

    run = {"tokens": 1000, "prompt_tokens": 1000, "generate_s": 100.0, "tokens_digest": "a"}
    d = {"teacher": "t", "dtype": "float32", "prompts": 8, "max_new_tokens": 64, "top_p": 0.95, "gflops": 100.0,
         "tokens_per_s_compute_bound": 40.0, "bandwidth_gbs": 20.0, "steps_per_s_bound": 3.0,
         "sorted": {**run, "generate_s": 200.0}, "prefiltered": run, "ray": {**run, "generate_s": 125.0}}
    page = "\n".join(render_decoding(d))
    assert "| 1000 | 1000 | 100.0 | 10.0 | 20.0 | 50% | 2.00 |" in page  # (1000 + 1000) / 100 s of 40
    assert "| 1000 | 1000 | 125.0 | 8.0 | 16.0 | 40% | 1.60 |" in page and "same fables: **yes**" in page


def test_the_judge_table_renders_agreement_as_eval_protocol_agree_reports_it():
    """A row per method / judge from agreement()'s own output: every control kind a column."""
    from benchmarks.render import render_judge
    from eval.calibration import agreement

    ref, ours = [], []
    for w, level in [("a", 2), ("b", 5), ("c", 8)]:
        for i in range(6):
            ref.append({"model": w, "hash": str(i), "scores": {"grammar": level + i % 2}, "age_group": "B", "control": False})
            ours.append({"model": w, "hash": str(i), "scores": {"grammar": level / 2}, "age_group": "B", "control": False})
            ours.append({"model": w, "hash": str(i), "scores": {"grammar": 1.0}, "age_group": "A", "control": "grammar errors"})
    row = {**agreement(ours, ref, n_boot=100), "wall_s": 60.0, "verdicts": 36, "s_per_verdict": 60 / 36}
    text = "\n".join(render_judge({"fables_per_writer": 6, "checklist / smollm2-135m": row}))
    # writer a's copies tie its real fables (1.0 = 2 / 2): six ties of 18 pairs, counted as half
    assert "| checklist / smollm2-135m | 83% of 18 |" in text and "grammar errors (grammar)" in text
    assert "| – | 1.7 |" in text and "1.00 [1.00, 1.00]" in text  # kappa with one age group on both sides: none


def test_the_judge_run_table_has_a_row_per_set_up_and_a_column_per_control():
    from benchmarks.render import render_judge_run

    def ctl(acc, n):
        return {"criterion": "x", "what": "y", "pairs": n, "real_above": round(acc * n), "ties": 0, "failed": 0,
                "accuracy": acc}
    row = {"wall_s": 201.4, "fables": 158, "shuffled_control": ctl(1.0, 18),
           "controls": {"shuffled words": ctl(1.0, 18), "grammar errors": ctl(0.47, 17)},
           "age_check": {"fables": 29, "rho": float("nan"), "low": float("nan"), "high": float("nan"), "distinct_groups": 1},
           "score_vs_loss": {"spearman": 0.32, "spearman_low": -0.32, "spearman_high": 0.63},
           "writers": {"t (teacher)": {"mean": 2.24, "low": 2.18, "high": 2.31}}}
    text = "\n".join(render_judge_run({"run": "runs/default", "setups": {"ensemble / smollm2-135m": row}}))
    assert "| ensemble / smollm2-135m | 100% of 18 | 47% of 17 | one group | 0.32 [-0.32, 0.63] | 158 | 201 |" in text
    assert "grammar errors (grammar)" in text and "| 2.24 [2.18, 2.31] |" in text
    # a set-up measured later on another default run: each row names its run
    later = {**row, "run": "/tmp/b/runs/default"}
    text = "\n".join(render_judge_run({"run": "/tmp/b/runs/default", "setups": {
        "ensemble / smollm2-135m": {**row, "run": "/tmp/a/runs/default"}, "pairwise / smollm2-135m": later}}))
    assert "run 1: /tmp/a/runs/default; run 2: /tmp/b/runs/default" in text
    assert "| ensemble / smollm2-135m (run 1) | 100% of 18 |" in text and "| pairwise / smollm2-135m (run 2) |" in text
    # a likelihood row names how it read the criteria, so rows of an older method are not taken for the current one
    text = "\n".join(render_judge_run({"run": "r", "setups": {"likelihood / m": {**row, "method": "u, u-p, p"},
                                                               "likelihood / old": row}}))
    assert "| likelihood / m [u, u-p, p] | 100% of 18 |" in text and "| likelihood / old | 100% of 18 |" in text


def test_the_judge_run_keeps_set_ups_not_measured_now(monkeypatch, tmp_path):
    from benchmarks import run

    before = {"run": "/old/runs/default", "measured": "2026-12-04", "setups": {"a / m": {"wall_s": 1.0},
                                                                             "b / m": {"wall_s": 2.0}}}
    out = run.bench_judge_run({}, tmp_path, setups=(), before=before, now="2026-12-05")
    assert out["setups"] == {"a / m": {"run": "/old/runs/default", "measured": "2026-12-04", "wall_s": 1.0},
                             "b / m": {"run": "/old/runs/default", "measured": "2026-12-04", "wall_s": 2.0}}
    out = run.bench_judge_run({}, tmp_path, setups=(), before={**before, "setups": {"a / m": {"wall_s": 1.0, "run": "/x"}}})
    assert out["setups"]["a / m"]["run"] == "/x"  # a row's own run wins over the section's


def test_the_judge_section_without_the_tinyfabulist_sample_keeps_its_last_figures(monkeypatch, tmp_path):
    """A clone with no ../shared beside it (a fresh clone anywhere else) measured nothing; it
    once dropped the whole section from BENCHMARKS.md."""
    from benchmarks import run

    monkeypatch.setattr(run, "ROOT", tmp_path / "repo")
    before = {"likelihood / smollm2-135m": {"wall_s": 1.0}, "fables_per_writer": 10}
    assert run.bench_judge({}, ("likelihood",), before) == before


def test_the_cross_tokenizer_section_reads_its_interval_plainly():
    from benchmarks.render import render_cross

    iv = {"mean": -0.01, "low": -0.02, "high": -0.004, "a_lower": 15, "n": 20}
    c = {"wall_s": 400.0, "teacher": "qwen2.5-coder-1.5b", "student": "smollm2-135m", "heldout": 20, "steps": 16,
         "rows": 24, "before": 0.9, "kd": 0.8, "sft": 0.81, "kd_minus_sft": iv, "kd_minus_before": iv,
         "aligned_share": 0.91, "aligned_share_rows": 0.9, "vocabulary_share": 0.3, "step_s": {"kd": 2.2, "sft": 2.0},
         "carrier_build_s": 3.0, "encode_ms": {"carried": 4.0, "same_tokenizer": 0.5}}
    page = "\n".join(render_cross(c))
    assert "| KD − SFT per fable | -0.0100 [-0.0200, -0.0040], lower on 15/20 fables: **KD lower, the interval " \
           "excludes zero** |" in page
    assert "| training step: KD / SFT (same student, same rows) | 2.20 / 2.00 s (1.10×) |" in page
    page = "\n".join(render_cross({**c, "kd_minus_sft": {**iv, "high": 0.003}}))
    assert "the interval does NOT exclude zero" in page


def test_the_three_teachers_section_carries_the_reports_table_and_the_stage_times():
    from benchmarks.render import render_three

    t = {"table": ["| teacher | student |", "| --- | --- |", "| a | b |"], "stages_s": 1000.0, "process_s": None,
         "engine_starts": 8, "stages": [{"stage": "generate", "teacher": "a", "wall_s": 100.0},
                                        {"stage": "report", "teacher": "", "wall_s": 0.0}]}
    page = "\n".join(render_three(t))
    assert "Stages 1000 s (generate a 100), 8 engine starts." in page and "| a | b |" in page
