"""The real pipeline (Ray Data LLM + vLLM, peft LoRA, transformers Trainer) on both
embedded teachers at the smallest useful size, then a rerun that must redo nothing."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from distill.schema import read_rows

from tests.conftest import ROOT, needs_models

pytestmark = [pytest.mark.e2e, needs_models]


def run_pipeline(runs_dir, *args):
    env = {**os.environ, "KD_RUNS_DIR": str(runs_dir)}
    return subprocess.run([sys.executable, "-m", "distill.pipeline", "--config", "configs/tiny.toml", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    proc = run_pipeline(runs)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return runs / "tiny", proc


def test_teacher_datasets_hold_fables_with_topk_logprobs(tiny_run):
    run_dir, _ = tiny_run
    for teacher in ("smollm2-135m", "gemma3-270m"):
        tables = [pq.read_table(f) for f in sorted((run_dir / "teachers" / teacher).glob("*.parquet"))]
        rows = read_rows(run_dir / "teachers" / teacher)
        assert len(rows) == 8 + 4
        assert len({(r["prompt_id"], r["sample_index"]) for r in rows}) == 12
        assert {r["split"] for r in rows} == {"train", "eval"}
        for r in rows:
            T = len(r["token_ids"])
            assert 0 < T <= 48 and len(r["topk_ids"]) == T and len(r["token_logprobs"]) == T
            assert all(len(k) == 20 for k in r["topk_ids"])
            assert all(a >= b for a, b in zip(r["topk_logprobs"][0], r["topk_logprobs"][0][1:]))
            assert r["text"].strip() and r["teacher_id"] == teacher
        meta = json.loads(tables[0].schema.metadata[b"kd"])
        assert meta["top_k"] == 20
    gemma_row = read_rows(run_dir / "teachers" / "gemma3-270m")[0]
    assert gemma_row["prompt_token_ids"][0] == 2  # Gemma's BOS reached the engine


def test_students_are_exported_and_kl_falls(tiny_run):
    run_dir, _ = tiny_run
    for teacher in ("smollm2-135m", "gemma3-270m"):
        sdir = run_dir / "students" / f"{teacher}-kd"
        assert (sdir / "adapter" / "adapter_model.safetensors").exists()
        assert (sdir / "merged" / "model.safetensors").exists()
        assert not list(sdir.rglob("*.bin")) or all(p.name == "training_args.bin" for p in sdir.rglob("*.bin"))
        ev = json.loads((sdir / "eval.json").read_text())
        assert ev["after"]["kl"] < ev["before"]["kl"]
        assert len(ev["samples"]) == 2 and all(s["student"] for s in ev["samples"])
        train = json.loads((sdir / "train.json").read_text())
        assert train["steps"] == 4 and train["trainable_params"] < train["params"] / 10


def test_report_and_manifest(tiny_run):
    run_dir, proc = tiny_run
    report = (run_dir / "report.md").read_text()
    assert report.count("Held-out KL to the teacher fell") == 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"ray", "peft", "transformers", "torch"} <= set(manifest["packages"])
    paths = {a["path"] for a in manifest["artifacts"]}
    assert "report.md" in paths and "students/smollm2-135m-kd/merged/model.safetensors" in paths
    assert all(a["bytes"] > 0 for a in manifest["artifacts"] if a["path"].endswith(".parquet"))
    stages = {(s["stage"], s["teacher"]) for s in manifest["stages"]}
    assert ("generate", "gemma3-270m") in stages and ("train-kd", "smollm2-135m") in stages
    assert all(s["wall_s"] >= 0 for s in manifest["stages"])


def test_rerun_keeps_finished_work(tiny_run):
    run_dir, _ = tiny_run
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")}
    merged = run_dir / "students" / "smollm2-135m-kd" / "merged" / "model.safetensors"
    merged_mtime = merged.stat().st_mtime_ns
    proc = run_pipeline(run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stages = json.loads((run_dir / "stages.json").read_text())
    assert {s["status"] for s in stages if s["stage"] != "report"} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")} == before
    assert merged.stat().st_mtime_ns == merged_mtime
