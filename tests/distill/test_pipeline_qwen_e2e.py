"""The default run's teacher -> student path on the real converted weights: Qwen2.5-Coder-1.5B
(vLLM through Ray Data LLM, top-k logprobs) distilled into the pretrained Qwen2.5-Coder-0.5B
(LoRA, top-k KD + CE) beside its SFT baseline, evaluated on held-out fables."""

import json
import os
import subprocess
import sys

import pytest

from distill.schema import read_rows, tokenizer_fingerprint
from tests.conftest import ROOT, needs_models

pytestmark = [pytest.mark.e2e, needs_models]


@pytest.fixture(scope="module")
def qwen_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    proc = subprocess.run([sys.executable, "-m", "distill.pipeline", "--config", "configs/tiny-qwen.toml"], cwd=ROOT,
                          env={**os.environ, "KD_RUNS_DIR": str(runs)}, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return runs / "tiny-qwen"


def test_the_1_5b_teacher_writes_fables_in_the_students_token_map(qwen_run):
    from transformers import AutoTokenizer

    from teacher.registry import get_teacher

    rows = read_rows(qwen_run / "teachers" / "qwen2.5-coder-1.5b")
    assert len(rows) == 4 + 2 and all(len(r["topk_ids"]) == len(r["token_ids"]) > 0 for r in rows)
    student_tok = AutoTokenizer.from_pretrained(get_teacher("qwen2.5-coder-0.5b").model_path())
    assert rows[0]["tokenizer_fingerprint"] == tokenizer_fingerprint(student_tok)  # logit KD applies
    assert "<|im_start|>assistant" in rows[0]["prompt_text"]  # the chat template, not a text frame


def test_the_pretrained_student_learns_and_kd_stays_closer_to_the_teacher_than_sft(qwen_run):
    """Three steps fit the training data, not the held-out set (measured with eight fables:
    held-out KL 0.592 -> 0.619 with KD, -> 0.897 with SFT). What is robust is that the training
    loss falls (every step sees the same four fables: with batches that differ, the loss of one
    batch against another's rose in a fresh-clone run) and that KD keeps the student far closer
    to the teacher than SFT on the same data."""
    after = {}
    for objective in ("kd", "sft"):
        sdir = qwen_run / "students" / f"qwen2.5-coder-1.5b-{objective}"
        train = json.loads((sdir / "train.json").read_text())
        assert train["steps"] == 3 and train["student_kind"] == "checkpoint" and train["student_layers"] == 24
        losses = [h["loss"] for h in train["history"]]
        assert len(losses) == 3 and losses[-1] < losses[0]
        ev = json.loads((sdir / "eval.json").read_text())
        assert len(ev["after"]["per_fable"]) == 2 and ev["before"]["samples"][0].strip()
        after[objective] = ev["after"]
    assert after["kd"]["kl"] < after["sft"]["kl"]
    report = (qwen_run / "report.md").read_text()
    assert "per held-out fable, KD − SFT" in report and "student before training" in report


def test_a_run_started_alone_starts_one_ray_head_for_all_its_engines(qwen_run):
    manifest = json.loads((qwen_run / "manifest.json").read_text())
    engines = {s["stage"]: s.get("engine_starts", 0) for s in manifest["stages"]}
    assert manifest["ray_heads_started"] == 1 and engines["generate"] == 1 == engines["write"]
    assert manifest["engine_starts"] == 2
