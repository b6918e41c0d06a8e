"""`python -m eval.compare`: inputs in three formats, the report, and the three real
TinyFabulist teachers (skipped where ../shared is absent)."""

import json

from hypothesis import HealthCheck, given, settings

from benchmarks.fuzz import jsonl_files
from distill.schema import write_table_atomic
from eval.compare import main
from tests.conftest import SHARED, needs_shared, read_or_named_error
from tests.distill.test_schema import a_row
from tests.eval.test_protocol import live_html

TF = SHARED / "data" / "tinyfabulist"
TEACHERS = {"mistral": "mistral-7b-instruct-v0.3", "llama": "llama-3.1-8b-instruct", "falcon": "falcon3-7b-instruct"}
JUDGES = {"mistral": "gpt-4o", "llama": "gpt-4o", "falcon": "o3-mini"}


def test_jsonl_with_a_field_mapping_and_a_dataset_folder(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text("\n".join(json.dumps({"id": str(i), "story": f"The kind fox number {i} <script>alert({i})</script> helped a crow in the forest."})
                           for i in range(4)) + "\n")
    ds = tmp_path / "ds"
    rows = [{**a_row(i), "prompt_id": str(i), "text": f"A proud crow {i} sang on a tall pine near the river.",
             "character": "crow", "trait": "proud"} for i in range(4)]
    write_table_atomic(rows, ds / "00000.parquet")
    out = tmp_path / "out"
    assert main(["--input", f"foxes={a}", "--field", "text=story", "--input", f"crows={ds}", "--out", str(out)]) == 0
    result = json.loads((out / "comparison.json").read_text())
    assert result["writers"]["foxes"]["fables"] == 4 and result["writers"]["crows"]["faithfulness"]["character"] == 1.0
    pair = result["pairs"][0]
    assert pair["aligned"] == 4 and 0 <= pair["rouge_l"] <= 1
    assert (out / "report.md").exists() and (out / "writers.png").stat().st_size > 0
    page = (out / "report.html").read_text()
    assert live_html(page) == [] and "&lt;script&gt;alert(" in page  # quoted fables stay text


def test_bad_inputs_end_in_one_clear_message(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{broken\n')
    assert main(["--input", f"x={bad}", "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "ok"}\n')
    assert main(["--input", f"x={good}", "--field", "text=story", "--out", str(tmp_path / "o")]) == 2
    assert "no field 'story'" in capsys.readouterr().err
    assert main(["--input", "nameless", "--out", str(tmp_path / "o")]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert main(["--input", f"x={tmp_path / 'missing.jsonl'}", "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


@needs_shared
def test_the_three_real_teachers_in_one_command(tmp_path):
    args = []
    for short, full in TEACHERS.items():
        args += ["--input", f"{short}={TF / f'fables-{full}.jsonl'}",
                 "--verdicts", f"{short}={TF / f'judged-{full}.{JUDGES[short]}.jsonl'}"]
    assert main([*args, "--format", "tinyfabulist", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "comparison.json").read_text())
    assert set(r["writers"]) == set(TEACHERS)
    for w in r["writers"].values():
        assert w["fables"] == 100 and 150 < w["words"] < 450
        assert 0 <= w["toxicity"]["mean"] <= w["toxicity"]["max"] <= 1 and len(w["toxicity"]["worst"]) == 3
        assert 0 < w["distinct"]["distinct_1"] < w["distinct"]["distinct_2"] <= 1
        assert 0 < w["embedding_cosine"] < 1 and w["self_bleu"] > 0
        assert w["faithfulness"]["overall"] > 0.5  # 7B teachers use most of what they were asked for
        assert w["tokens_per_s"] > 0 and w["cost_per_1k_fables"] > 0
    assert round(r["writers"]["mistral"]["judge"], 2) == 8.32 and round(r["writers"]["falcon"]["judge"], 2) == 8.57
    assert len(r["pairs"]) == 3
    for p in r["pairs"]:
        assert p["aligned"] == 100  # the same 100 prompts, matched by prompt text
        assert p["embedding"]["same_prompt"] > p["embedding"]["different_prompt"]
    report = (tmp_path / "report.md").read_text()
    assert "mistral ↔ llama" in report and "## The most toxic windows" in report


@given(content=jsonl_files(json.dumps({"id": "1", "text": "The kind fox helped.", "prompt": "Write.", "character": "fox"})))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_input_file_reads_as_text_records_or_one_error_naming_it(tmp_path, content):
    from eval.comparison_inputs import load_input

    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    for fmt in ("jsonl", "tinyfabulist"):
        records = read_or_named_error(lambda p: load_input(str(p), fmt, {}), path)
        assert records is None or records and all(isinstance(r["text"], str) and isinstance(r["prompt"], str) for r in records)
