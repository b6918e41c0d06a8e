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
