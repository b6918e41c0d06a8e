"""The production architectures end to end, at toy size: tiny random-weight Llama-2,
Mistral and Falcon teachers (tests/tiny_models.py) declared by folder in
configs/tiny-archs.toml, each with its family's prompt format, through the whole
pipeline: vLLM generation with top-k logprobs on Ray, the pruned student, KD, held-out
evaluation, the report; then each merged student in vLLM."""

import json
import os
import subprocess
import sys

import pytest
from transformers import AutoConfig, AutoTokenizer

from distill.schema import read_rows
from teacher.engine import cpu_env
from tests.conftest import ROOT, VLLM_IN_PROCESS
from tests.tiny_models import ARCHS, build_all

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def archs_run(tmp_path_factory):
    models = build_all(tmp_path_factory.mktemp("tiny-archs"))
    runs = tmp_path_factory.mktemp("runs")
    sets = [a for t, p in models.items() for a in ("--set", f'teacher.{t}.path="{p}"')]
    proc = subprocess.run([sys.executable, "-m", "distill.pipeline", "--config", "configs/tiny-archs.toml", *sets],
                          cwd=ROOT, env={**os.environ, "KD_RUNS_DIR": str(runs)}, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return runs / "tiny-archs", models


@pytest.mark.parametrize("teacher", list(ARCHS))
def test_each_teacher_writes_with_its_own_format_bos_once_and_topk(archs_run, teacher):
    run_dir, models = archs_run
    tok = AutoTokenizer.from_pretrained(models[teacher])
    rows = read_rows(run_dir / "teachers" / teacher)
    assert len(rows) == 4 + 2
    for r in rows:
        assert len(r["topk_ids"]) == len(r["token_ids"]) > 0 and len(r["topk_ids"][0]) == 20
        ids = list(r["prompt_token_ids"])  # as vLLM tokenized the prompt
        assert ids == tok(r["prompt_text"]).input_ids
        if tok.bos_token_id is None:  # Falcon: no BOS at all
            assert r["prompt_text"].rstrip().endswith("Falcon:")
        else:
            assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    marker = {"llama2": "<</SYS>>", "mistral": "[INST] ", "falcon": "\nUser: "}[ARCHS[teacher][1]]
    assert marker in rows[0]["prompt_text"]


def test_the_three_teachers_generated_at_once(archs_run):
    run_dir, _ = archs_run
    gen = [s for s in json.loads((run_dir / "stages.json").read_text()) if s["stage"] == "generate"]
    assert sorted(s["teacher"] for s in gen) == sorted(ARCHS) and {s["status"] for s in gen} == {"ran"}
    # parallel_teachers = 3: every generation stage started before any had finished
    assert max(s["started"] for s in gen) < min(s["started"] + s["wall_s"] for s in gen)


@pytest.mark.parametrize("teacher", list(ARCHS))
def test_each_architecture_is_pruned_distilled_and_evaluated(archs_run, teacher):
    run_dir, models = archs_run
    sdir = run_dir / "students" / f"{teacher}-kd"
    merged = AutoConfig.from_pretrained(sdir / "merged")
    assert merged.architectures == AutoConfig.from_pretrained(models[teacher]).architectures
    assert merged.num_hidden_layers == 2
    train = json.loads((sdir / "train.json").read_text())
    assert train["student_kind"] == "pruned" and train["steps"] == 2
    assert train["workers"] == (2 if teacher == "tiny-mistral" else 1)  # tiny-mistral: Ray Train, DDP
    ev = json.loads((sdir / "eval.json").read_text())
    assert len(ev["after"]["per_fable"]) == 2 and ev["after"]["kl"] >= 0
    assert teacher in (run_dir / "report.md").read_text()
    # Its fables, before and after training, written by vLLM: as LoRA adapters on the base
    # for Llama-2 and Mistral, merged for Falcon (vLLM serves no LoRA on it).
    for label in (f"{teacher}-initial", f"{teacher}-kd"):
        assert len(json.loads((run_dir / "students" / f"samples-{label}.json").read_text())["samples"][0]) == 1


def test_every_student_fable_comes_from_vllm_lora_where_it_can(archs_run):
    run_dir, _ = archs_run
    write = [s for s in json.loads((run_dir / "stages.json").read_text()) if s["stage"] == "write"]
    # one engine per LoRA base (Llama-2, Mistral); Falcon's base and merged KD student: one each
    assert [s["engine_starts"] for s in write] == [4]


VLLM_EACH = """
import gc, json, sys
from vllm import LLM, SamplingParams
from teacher.hardware import engine_dtype, engine_eager
for path in sys.argv[1:]:
    llm = LLM(model=path, dtype=engine_dtype(), enforce_eager=engine_eager(), max_model_len=256, seed=0)
    out = llm.generate(["[INST] Tell a fable. [/INST]"], SamplingParams(max_tokens=8, temperature=0.0, logprobs=5))
    out = out[0].outputs[0]
    print("RESULT", json.dumps({"path": path, "tokens": len(out.token_ids), "logprobs": len(out.logprobs)}), flush=True)
    del llm
    gc.collect()
"""


def test_vllm_serves_every_merged_student(archs_run):
    run_dir, _ = archs_run
    folders = [str(run_dir / "students" / f"{t}-kd" / "merged") for t in ARCHS]
    proc = subprocess.run([sys.executable, "-c", VLLM_EACH, *folders], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, **cpu_env(1), **VLLM_IN_PROCESS})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(l[len("RESULT "):]) for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert [r["path"] for r in results] == folders
    assert all(r["tokens"] == 8 == r["logprobs"] for r in results)


def test_which_teacher_makes_the_best_student_on_the_three_architectures(archs_run, tmp_path):
    """configs/three-teachers.toml's question on the production architectures: one checkpoint
    student (tiny Falcon's) distilled from each teacher, Llama-2's and Mistral's top-k carried
    onto its tokens (Mistral's through Ray Train's two workers), and from all three at once;
    the report's table has a row per teacher and the mix. It writes no student fables
    (eval.student_samples = 0): the module's run tests that, and vLLM serves no LoRA on
    Falcon, so each of these five Falcon students would be an engine start of its own."""
    import shutil

    run_dir, models = archs_run
    for t in ARCHS:
        shutil.copytree(run_dir / "teachers" / t, tmp_path / "three" / "teachers" / t)
    sets = [a for t, p in models.items() for a in ("--set", f'teacher.{t}.path="{p}"')]
    sets += ["--set", 'train.student_kind="checkpoint"', "--set", f'train.student_checkpoint="{models["tiny-falcon"]}"',
             "--set", 'mix={"tiny-llama2" = 1.0, "tiny-mistral" = 1.0, "tiny-falcon" = 2.0}', "--set", "eval.student_samples=0"]
    proc = subprocess.run([sys.executable, "-m", "distill.pipeline", "--config", "configs/tiny-archs.toml",
                           "--name", "three", *sets], cwd=ROOT, env={**os.environ, "KD_RUNS_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    students = tmp_path / "three" / "students"
    for t in ARCHS:
        trained = json.loads((students / f"{t}-kd" / "train.json").read_text())
        assert trained["student_kind"] == "checkpoint" and trained["steps"] == 2
        assert (trained["aligned_share"] == 1.0) == (t == "tiny-falcon")  # the student's own tokenizer aligns all
        ev = json.loads((students / f"{t}-kd" / "eval.json").read_text())
        assert (ev["after"]["kl"] is None) == (t != "tiny-falcon") and ev["after"]["ce_per_byte"] is not None
    per = json.loads((students / "mix-kd" / "eval-per-teacher.json").read_text())
    assert set(per) == set(ARCHS) and per["tiny-falcon"]["weight"] == 2.0
    table = (tmp_path / "three" / "report.md").read_text().split("## Which teacher makes the best student")[1]
    assert all(f"| {t} |" in table for t in ARCHS) and "All of them at once" in table
    stages = json.loads((tmp_path / "three" / "stages.json").read_text())
    assert not [s for s in stages if s["stage"] == "write" and s.get("status") != "skipped"]
