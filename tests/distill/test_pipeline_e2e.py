"""The real pipeline (Ray Data LLM + vLLM, peft LoRA, transformers Trainer) on both
embedded teachers at the smallest useful size, submitted as a team runs it on its cluster:
`ray job submit ... -- python -m distill.pipeline` to the session's `make ray-up` head
(tests/ray_head.py); then, on its own, a rerun that must redo nothing.
Both teachers generate; SmolLM2's data trains the students. Gemma's fables are carried
onto SmolLM2's tokens below; the other-family, QLoRA and two-teacher students are runs of
their own (test_pipeline_variants_e2e.py), so a second pair of students here would test
nothing new."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from distill.schema import read_rows
from teacher.engine import cpu_env

from tests.conftest import ROOT, VLLM_IN_PROCESS, needs_models

pytestmark = [pytest.mark.e2e, needs_models]


# The module's run: Gemma writes fables (its BOS, the other-family test) but gets no students.
TINY = ("--set", "teacher.gemma3-270m.distil=false")


def run_pipeline(runs_dir, *args):
    env = {**os.environ, "KD_RUNS_DIR": str(runs_dir)}
    return subprocess.run([sys.executable, "-m", "distill.pipeline", "--config", "configs/tiny.toml", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, ray_head):
    """Generation on the cluster's engines, the judge deployed on the cluster's Serve, and
    training, evaluation and the report in the job's driver."""
    runs = tmp_path_factory.mktemp("runs")
    proc = ray_head.submit(ROOT, {"KD_RUNS_DIR": str(runs)}, "python", "-m", "distill.pipeline",
                           "--config", "configs/tiny.toml", *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
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
            assert 0 < T <= 24 and len(r["topk_ids"]) == T and len(r["token_logprobs"]) == T
            assert all(len(k) == 20 for k in r["topk_ids"])
            assert all(a >= b for a, b in zip(r["topk_logprobs"][0], r["topk_logprobs"][0][1:]))
            assert r["text"].strip() and r["teacher_id"] == teacher
        meta = json.loads(tables[0].schema.metadata[b"kd"])
        assert meta["top_k"] == 20
    gemma_row = read_rows(run_dir / "teachers" / "gemma3-270m")[0]
    assert gemma_row["prompt_token_ids"][0] == 2  # Gemma's BOS reached the engine


def test_students_are_exported_and_kl_falls(tiny_run):
    run_dir, _ = tiny_run
    assert sorted(p.name for p in (run_dir / "students").iterdir() if p.is_dir()) == ["smollm2-135m-kd", "smollm2-135m-sft"]
    for teacher, objective in [("smollm2-135m", o) for o in ("kd", "sft")]:
        sdir = run_dir / "students" / f"{teacher}-{objective}"
        assert (sdir / "adapter" / "adapter_model.safetensors").exists()
        assert (sdir / "merged" / "model.safetensors").exists()
        assert not list(sdir.rglob("*.bin")) or all(p.name == "training_args.bin" for p in sdir.rglob("*.bin"))
        ev = json.loads((sdir / "eval.json").read_text())
        assert ev["after"]["kl"] < ev["before"]["kl"]
        assert len(ev["samples"]) == 2 and all(s["student"] for s in ev["samples"])
        train = json.loads((sdir / "train.json").read_text())
        assert train["steps"] == 4 and train["trainable_params"] < train["params"] / 10


def test_report_and_manifest(tiny_run, ray_head):
    from tests.ray_head import SECRET, files_holding

    run_dir, proc = tiny_run
    # The job ran with the head's HF_TOKEN in its environment: no file of the run holds it.
    assert files_holding(run_dir, SECRET) == [] and files_holding(ray_head.temp, SECRET) == []
    report = (run_dir / "report.md").read_text()
    assert report.count("Held-out KL to the teacher fell") == 1
    # the KD student next to the same student trained with plain cross-entropy, per distilled teacher
    assert report.count("Distillation against plain fine-tuning") == 1
    assert report.count("| SFT: CE on the teacher's text |") == 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"ray", "peft", "transformers", "torch"} <= set(manifest["packages"])
    paths = {a["path"] for a in manifest["artifacts"]}
    assert "report.md" in paths and "students/smollm2-135m-kd/merged/model.safetensors" in paths
    assert all(a["bytes"] > 0 for a in manifest["artifacts"] if a["path"].endswith(".parquet"))
    stages = {(s["stage"], s["teacher"]) for s in manifest["stages"]}
    assert ("generate", "gemma3-270m") in stages and ("train-kd", "smollm2-135m") in stages
    assert ("train-sft", "smollm2-135m") in stages and ("evaluate-sft", "smollm2-135m") in stages
    assert not {s for s in stages if s[1] == "gemma3-270m" and s[0] != "generate"}  # a teacher for comparison only
    assert all(s["wall_s"] >= 0 for s in manifest["stages"])
    assert [s["stage"] for s in manifest["stages"]] == [
        "generate", "generate", "train-kd", "train-sft", "write", "evaluate-kd", "evaluate-sft", "judge", "compare",
        "report"]
    # A submitted job starts no head of its own: generate, write and the judge all ran on the
    # cluster's (tests/distill/test_pipeline_qwen_e2e.py: a run started alone starts one).
    assert manifest["ray_heads_started"] == 0
    engines = {(s["stage"], s["teacher"]): s.get("engine_starts", 0) for s in manifest["stages"]}
    assert engines[("generate", "smollm2-135m")] == engines[("generate", "gemma3-270m")] == 1
    assert engines[("write", "")] == 1 == engines[("judge", "")] and manifest["engine_starts"] == 4
    # The judge's service starts beside the write stage: its start may outlast its own stage.
    assert all(0 < s["engine_start_s"] < s["wall_s"] for s in manifest["stages"]
               if s.get("engine_starts") and s["stage"] != "judge")
    stage = {(s["stage"], s["teacher"]): s for s in manifest["stages"]}
    judge, write = stage[("judge", "")], stage[("write", "")]
    assert write["started"] <= judge["started"] and 0 < judge["engine_start_s"] < judge["started"] + judge["wall_s"] - write["started"]
    assert "4 engine start(s) took" in report and "0 Ray head(s) started." in report


def test_judge_scores_every_student_and_teacher_through_the_local_server(tiny_run):
    """The judge stage: the embedded SmolLM2 served by the teacher service (Ray Serve LLM, the
    `judge` application), called with the openai client, over 2 held-out prompts per writer,
    plus the KD student's checkpoints."""
    run_dir, _ = tiny_run
    summary = json.loads((run_dir / "judge" / "summary.json").read_text())
    teachers = {f"{t} (teacher)" for t in ("smollm2-135m", "gemma3-270m")}
    writers = teachers | {f"{t} (shuffled)" for t in teachers} | {f"{t} (wrong prompt)" for t in teachers} | {
        f"smollm2-135m-{o}" for o in ("kd", "sft")}
    assert set(summary["models"]) == writers
    # the judge's sanity figure: 2 teachers x 2 prompts, and 2 training fables of the distilled
    # teacher judged only as control sources (judge.control_train_fables), in no writer's score
    control = summary["shuffled_control"]
    assert control["pairs"] + control["failed"] == 6 and 0 <= control["accuracy"] <= 1 or control["pairs"] == 0
    wrong = summary["controls"]["wrong prompt"]  # the fable judged against another prompt
    assert wrong["criterion"] == "consistency" and wrong["pairs"] + wrong["failed"] == 6
    assert set(summary["controls"]) == {"shuffled words", "wrong prompt"} and summary["age_check"]["fables"] >= 0
    assert summary["protocol"]["control_train_fables"] == 2
    for name, m in summary["models"].items():
        n = 4 if name.startswith("smollm2-135m (teacher) (") else 2  # the distilled teacher's control copies
        assert m["fables"] == n and m["verdicts"] + m["failures"] == n, name
    assert sum(m["verdicts"] for m in summary["models"].values()) >= 1
    assert summary["judge"]["model"] == "smollm2-135m" and summary["judge"]["base_url"].startswith("http://127.0.0.1:")
    assert summary["judge"]["structured"] is True
    points = summary["score_vs_loss"]["points"]
    assert [p["step"] for p in points] == [2, 4]
    verdicts = [json.loads(l) for l in (run_dir / "judge" / "verdicts.jsonl").read_text().splitlines()]
    # writers, control sources, controls, checkpoints
    assert len(verdicts) == 8 + 2 + 12 + 2 * 2 and all(v["reason"] for v in verdicts)
    sources = [v for v in verdicts if v["role"] == "calibration"]
    assert [v["model"] for v in sources] == ["smollm2-135m (teacher)"] * 2
    train = {r["prompt_id"] for r in read_rows(run_dir / "teachers" / "smollm2-135m", split="train")}
    assert {v["prompt_id"] for v in sources} <= train
    against = [v for v in verdicts if v.get("control") == "wrong prompt"]
    assert all(v["judged_against"] != v["prompt_id"] for v in against) and len(against) == 6
    # The dry run counts the verdicts as the judge stage made them, from the run's own config.
    from distill import config, plan

    recorded = config.from_dict(json.loads((run_dir / "config.json").read_text()))
    load = plan.judge_load(recorded)
    # four requests a verdict (three echoed texts, the age question); the last checkpoint is the student
    assert load["verdicts"] == len(verdicts) and load["requests"] == 4 * (len(verdicts) - 2)
    assert all(v["judge"]["rubric"] == "fable-checklist" and v["judge"]["mode"] == "likelihood" for v in verdicts)
    # the served judge's own likelihoods: the fable alone and after its prompt, read from its echoed tokens
    ok = [v["verdict"] for v in verdicts if v["verdict"]]
    assert ok and all(0 < v["text_loss"] < 20 and 0 < v["loss_after_prompt"] < 20 for v in ok)
    # creativity: the share of the nats in prompt and fable that the fable brings, both read from one echo
    assert all(v["fable_nats"] > 0 and v["prompt_nats"] > 0 and 0 <= v["age_expected"] <= 4 for v in ok)
    assert all(v["scores"]["creativity"] == pytest.approx(1 + 4 * v["fable_nats"] / (v["fable_nats"] + v["prompt_nats"]))
               for v in ok)
    # The last checkpoint is the finished student: judged on the student's own fables, not re-merged.
    last, student = points[-1]["label"], points[-1]["label"].split("@")[0]
    fables_of = lambda m: sorted((v["prompt_id"], v["fable"]) for v in verdicts if v["model"] == m)  # noqa: E731
    assert fables_of(last) == fables_of(student) != []
    # Checkpoints are merged in memory: no full-size model per checkpoint on disk.
    assert (run_dir / "judge" / "fables-smollm2-135m-kd@2.json").exists()
    assert not (run_dir / "judge" / "checkpoints").exists()
    assert "## The judge" in (run_dir / "report.md").read_text()
    for f in ("report.md", "report.html", "scores.png", "age_groups.png", "score_vs_loss.png"):
        assert (run_dir / "judge" / f).stat().st_size > 0
    # The service's log stays with the run, and every distinct fable was asked for (a repeated
    # one, e.g. the last checkpoint's, may be answered from the verdict cache).
    url = summary["judge"]["base_url"].rstrip("/")  # the openai client adds a slash
    assert url.endswith("/judge/v1") and f"ready {url}" in (run_dir / "judge" / "server.log").read_text()
    distinct = {(v["prompt"], v["fable"]) for v in verdicts}
    assert len({(v["prompt"], v["fable"]) for v in verdicts if not v["cached"]}) == len(distinct)


def test_make_eval_rejudges_a_finished_run_from_its_cache(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / "judge" / "verdicts.jsonl").read_text()
    proc = subprocess.run([sys.executable, "-m", "eval.protocol", "run", "--run", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = [json.loads(l) for l in (run_dir / "judge" / "verdicts.jsonl").read_text().splitlines()]
    assert len(after) == len(before.splitlines()) and all(v["cached"] for v in after)
    assert "judge report:" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "eval.protocol", "run", "--run", str(run_dir.parent / "nope")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a finished run" in bad.stderr


def test_rerun_keeps_finished_work(tiny_run):
    run_dir, _ = tiny_run
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")}
    merged = run_dir / "students" / "smollm2-135m-kd" / "merged" / "model.safetensors"
    merged_mtime = merged.stat().st_mtime_ns
    proc = run_pipeline(run_dir.parent, *TINY)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stages = json.loads((run_dir / "stages.json").read_text())
    assert {s["status"] for s in stages if s["stage"] != "report"} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")} == before
    assert merged.stat().st_mtime_ns == merged_mtime


VLLM_GENERATE = """
import json, sys
from vllm import LLM, SamplingParams
from teacher.hardware import engine_dtype, engine_eager
llm = LLM(model=sys.argv[1], dtype=engine_dtype(), enforce_eager=engine_eager(), max_model_len=256, seed=0)
out = llm.generate(["Once upon a time"], SamplingParams(max_tokens=12, temperature=0.0, logprobs=5))[0].outputs[0]
print("RESULT", json.dumps({"text": out.text, "tokens": len(out.token_ids), "logprobs": len(out.logprobs)}))
"""


def test_vllm_loads_and_generates_from_the_merged_student(tiny_run):
    run_dir, _ = tiny_run
    merged = run_dir / "students" / "smollm2-135m-kd" / "merged"
    proc = subprocess.run([sys.executable, "-c", VLLM_GENERATE, str(merged)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **cpu_env(1), **VLLM_IN_PROCESS})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # vLLM logs to stdout too: find the script's own line
    out = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][len("RESULT "):])
    assert out["tokens"] == 12 and out["logprobs"] == 12 and out["text"].strip()


def test_footprint_headline_serves_the_teacher_and_its_students_alike(tiny_run, tmp_path):
    """The headline stage on the finished run (the tiny config leaves it off, to keep the
    module's run short): the teacher and both students served alike, then the report."""
    import dataclasses

    from distill import artifacts, pipeline
    from distill.config import from_dict
    from distill.run_folder import RunFolder
    from eval.report import write_report

    run_dir, _ = tiny_run
    run = RunFolder(run_dir)
    cfg = from_dict(artifacts.read_json(run.config))
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, footprint=True, footprint_prompts=2,
                                                            footprint_new_tokens=8))
    ledger = artifacts.Ledger(tmp_path / "stages.json")
    try:
        pipeline.stage_footprint(cfg, run, ledger)
        fp = artifacts.read_json(run.footprint)
        writers = fp["writers"]
        assert [w["label"] for w in writers] == ["smollm2-135m", "smollm2-135m-kd", "smollm2-135m-sft"]
        assert all(w["tokens"] == 2 * 8 and w["tokens_per_s"] > 0 for w in writers)
        assert all(w["peak_rss_bytes"] > w["weight_bytes"] > 0 for w in writers)
        # LoRA merged back: each student is the teacher's architecture (its pruned copy here)
        assert writers[1]["params"] == writers[2]["params"] <= writers[0]["params"]
        assert ledger.stages[0]["engine_starts"] == 3 and fp["settings"]["kv_cache_gib"] == 1
        report = write_report(cfg, run, ledger.stages).read_text()
        section = report.split("## What distillation buys", 1)[1].split("\n## ", 1)[0]
        assert "**smollm2-135m-kd keeps " in section and "× the speed" in section
        rows = [line for line in section.splitlines() if line.startswith("| smollm2-135m")]
        assert len(rows) == 3 and all("[" in r for r in rows)  # every writer judged, with its interval
        assert rows[0].endswith("| 0.000 |")  # the teacher's KL to itself
        pipeline.stage_footprint(cfg, run, ledger)  # done once: a rerun keeps it
        assert ledger.stages[-1]["status"] == "skipped"
    finally:
        run.footprint.unlink(missing_ok=True)


def test_carrying_real_shards_is_exact_within_a_tokenizer_and_covers_every_byte_across(tiny_run):
    """On the run's real shards: carried onto SmolLM2's own tokens, a SmolLM2 row and its loss
    are today's same-tokenizer row and loss to 1e-6; carried from Gemma onto SmolLM2, every
    byte of every fable lies in one aligned piece, and most positions align."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from distill import align
    from distill.data import encode_row
    from distill.losses import kd_objective
    from teacher.registry import get_teacher

    run_dir, _ = tiny_run
    smol = AutoTokenizer.from_pretrained(get_teacher("smollm2-135m").model_path())
    gemma = AutoTokenizer.from_pretrained(get_teacher("gemma3-270m").model_path())
    same = align.Carrier(smol, smol)
    g = torch.Generator().manual_seed(0)
    for row in read_rows(run_dir / "teachers" / "smollm2-135m"):
        a, b = same.encode(row, 512), encode_row(row, 512)
        assert a["aligned"].all() and all(np.array_equal(a[k], b[k]) for k in ("input_ids", "labels", "topk_ids"))
        logits = torch.randn(len(b["labels"]), 49152, generator=g)
        ids = torch.as_tensor(a["topk_ids"]).long()
        cross = kd_objective(logits, torch.as_tensor(a["labels"]), ids, torch.as_tensor(a["topk_logprobs"]),
                             torch.ones(len(ids)), 0.9, aligned=torch.as_tensor(a["aligned"]),
                             matched=ids >= 0, uld_weight=1.0)
        today = kd_objective(logits, torch.as_tensor(b["labels"]), torch.as_tensor(b["topk_ids"]).long(),
                             torch.as_tensor(b["topk_logprobs"]), torch.ones(len(ids)), 0.9)
        assert abs(float(cross["loss"]) - float(today["loss"])) < 1e-6
    carrier, shares = align.Carrier(gemma, smol), []
    for row in read_rows(run_dir / "teachers" / "gemma3-270m"):
        t_spans, t_bytes = align.spans(row["token_ids"], carrier.teacher_pieces)
        s_ids = smol(row["text"], add_special_tokens=False).input_ids
        s_spans, s_bytes = align.spans(s_ids, carrier.student_pieces)
        raw = row["text"].encode()
        assert t_bytes == s_bytes == raw
        cover = np.zeros(len(raw), int)
        for start, end, _, _ in align.groups(t_spans, s_spans, len(raw)):
            cover[start:end] += 1
        assert (cover == 1).all()
        shares.append(carrier.encode(row, 512)["aligned"].mean())
    assert np.mean(shares) > 0.5
