"""Measure the pipeline and write BENCHMARKS.md.

    python -m benchmarks.run                 # what `make bench` runs (~20 min on 2 cores)
    python -m benchmarks.run --skip-default  # only the generation comparison

Figures are compared as ratios taken in this same run: the machines are shared and
noisy, so absolute seconds from different runs are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 15 * 60  # the default run's target on 2 cores


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except OSError:
        mem = 0
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.machine()}, no GPU"


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout


def last_json(stdout: str) -> dict:
    """The command's result line: engines log to stdout too, so take the last JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON result line in the command's output")


def parquet_bytes(table) -> int:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return len(buf.getvalue())


def bench_storage(dump: Path) -> dict:
    """Bytes per stored (token id, logprob) entry, float32 lists against the compact form,
    and what the quantization does to a real student's KL (the pruned SmolLM2 student)."""
    import pyarrow as pa

    from distill.schema import decode_topk, encode_topk, storage_schema
    from eval.heldout import heldout_metrics
    from student.build import build_student
    from teacher.registry import get_teacher

    rows = json.loads(dump.read_text())
    entries = sum(len(r["topk_ids"]) * len(r["topk_ids"][0]) for r in rows if r["topk_ids"])
    plain = pa.table({"topk_ids": pa.array([r["topk_ids"] for r in rows], pa.list_(pa.list_(pa.int32()))),
                      "topk_logprobs": pa.array([r["topk_logprobs"] for r in rows], pa.list_(pa.list_(pa.float32())))})
    enc = [encode_topk(r["topk_ids"], r["topk_logprobs"]) for r in rows]
    schema = storage_schema(get_teacher("smollm2-135m").vocab_size)
    compact = pa.table({c: pa.array([e[c] for e in enc], schema.field(c).type)
                        for c in ("topk_k", "topk_ids_flat", "topk_lp_q")})
    decoded = []
    for r, e in zip(rows, enc):
        ids, lps = decode_topk(e["topk_k"], e["topk_ids_flat"], e["topk_lp_q"])
        decoded.append({**r, "topk_ids": ids, "topk_logprobs": lps})
    model, tok = build_student("pruned", get_teacher("smollm2-135m").model_path())
    exact = heldout_metrics(model, tok.pad_token_id, rows)
    approx = heldout_metrics(model, tok.pad_token_id, decoded)
    return {"entries": entries, "float32_bytes": parquet_bytes(plain), "compact_bytes": parquet_bytes(compact),
            "kl_float32": exact["kl"], "kl_compact": approx["kl"], "tokens": exact["tokens"]}


def bench_generation(n: int, max_new: int, env: dict, dump: Path) -> dict:
    plain_wall, out = timed([sys.executable, "-m", "benchmarks.plain_vllm", "--n", str(n),
                             "--max-new-tokens", str(max_new), "--dump", str(dump)], env)
    plain = last_json(out)
    with tempfile.TemporaryDirectory() as d:
        ray_wall, out = timed([sys.executable, "-m", "ray_cluster.generate", "--teacher", "smollm2-135m",
                               "--out", d, "--n-train", str(n), "--n-eval", "0", "--max-new-tokens", str(max_new)],
                              {k: v for k, v in env.items() if k != "RAY_ADDRESS"})
    ray = last_json(out)
    return {"prompts": n, "max_new_tokens": max_new, "plain": {**plain, "process_s": plain_wall},
            "ray": {**ray, "process_s": ray_wall}}


def _kl(run_dir: Path, teacher: str) -> dict:
    ev = json.loads((run_dir / "students" / f"{teacher}-kd" / "eval.json").read_text())
    tr = json.loads((run_dir / "students" / f"{teacher}-kd" / "train.json").read_text())
    return {"before": ev["before"]["kl"], "after": ev["after"]["kl"], "params": tr["params"],
            "trainable": tr["trainable_params"], "train_s": tr["train_runtime_s"], "layers": tr["student_layers"]}


def bench_default(env: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        runs = Path(d)
        wall, _ = timed([sys.executable, "-m", "distill.pipeline", "--config", "configs/default.toml",
                         "--name", "bench"], {**env, "KD_RUNS_DIR": d})
        manifest = json.loads((runs / "bench" / "manifest.json").read_text())
        evals = {t["teacher"]: _kl(runs / "bench", t["teacher"]) for t in manifest["config"]["teachers"]}
        # The other student kind on the very same teacher data: copying the finished
        # generation makes the pipeline skip straight to training.
        shutil.copytree(runs / "bench" / "teachers" / "smollm2-135m", runs / "bench-config" / "teachers" / "smollm2-135m")
        timed([sys.executable, "-m", "distill.pipeline", "--config", "configs/bench-student-config.toml"],
              {**env, "KD_RUNS_DIR": d})
        alt = _kl(runs / "bench-config", "smollm2-135m")
    return {"process_s": wall, "stages": manifest["stages"], "total_s": manifest["total_wall_s"], "kl": evals,
            "student_choice": {"pruned + LoRA (default)": evals["smollm2-135m"], "from config, full weights": alt}}


def render(gen: dict | None, default: dict | None, storage: dict | None = None) -> str:
    lines = ["# Benchmarks", "", f"Machine: {machine()}.", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             "by `make bench`; every ratio compares figures taken in this one run.", ""]
    if default:
        s = default["process_s"]
        lines += ["## The default run (`make distill`, configs/default.toml, models already built)", "",
                  f"Total: **{s / 60:.1f} min** against the 15-minute budget: {s / BUDGET_S:.2f} of it.", "",
                  "| stage | teacher | wall s | share of run |", "| --- | --- | --- | --- |"]
        lines += [f"| {st['stage']} | {st['teacher']} | {st['wall_s']:.1f} | {st['wall_s'] / s:.0%} |" for st in default["stages"]]
        lines += ["", "Held-out top-20 KL to the teacher (nats/token), before → after training:", ""]
        lines += [f"- {t}: {v['before']:.3f} → {v['after']:.3f} ({v['after'] / v['before']:.2f}×)" for t, v in default["kl"].items()]
        lines += ["", "### Choosing the student (SmolLM2 teacher, same data, same 40 steps)", "",
                  "| student | layers | params | trained params | KL before | KL after | train s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {k} | {v['layers']} | {v['params'] / 1e6:.1f}M | {v['trainable'] / 1e6:.2f}M | {v['before']:.3f} | "
                  f"{v['after']:.3f} | {v['train_s']:.0f} |" for k, v in default["student_choice"].items()]
        lines.append("")
    if gen:
        p, r = gen["plain"], gen["ray"]
        plain_tps, ray_tps = p["tokens"] / p["process_s"], r["generated_tokens"] / r["process_s"]
        lines += [f"## Generation: the Ray Data LLM job against plain `vllm.LLM.generate`", "",
                  f"SmolLM2-135M, {gen['prompts']} training prompts, up to {gen['max_new_tokens']} new tokens, "
                  "top-20 logprobs, T=1, same engine settings. Whole processes, engine start included.", "",
                  "| path | tokens | wall s | tokens/s | ratio to plain vLLM |", "| --- | --- | --- | --- | --- |",
                  f"| plain `LLM.generate` | {p['tokens']} | {p['process_s']:.1f} | {plain_tps:.0f} | 1.00 |",
                  f"| Ray job (`ray_cluster.generate`, Parquet shards) | {r['generated_tokens']} | {r['process_s']:.1f} | "
                  f"{ray_tps:.0f} | {ray_tps / plain_tps:.2f} |", "",
                  f"Plain vLLM alone: engine start {p['engine_start_s']:.1f} s, generation {p['generate_s']:.1f} s "
                  f"({p['tokens'] / p['generate_s']:.0f} tokens/s once started).", ""]
    if storage:
        e = storage["entries"]
        f32, comp = storage["float32_bytes"] / e, storage["compact_bytes"] / e
        lines += ["## Storage of the teacher's top-k", "",
                  f"{e} (token id, logprob) entries from the plain-vLLM run above (SmolLM2, top-20), Parquet + zstd.", "",
                  "| encoding | bytes per entry | ratio |", "| --- | --- | --- |",
                  f"| int32 ids + float32 logprobs (nested lists) | {f32:.2f} | 1.00 |",
                  f"| uint16 ids + uint8 rank gaps of 1/16 nat (stored form) | {comp:.2f} | {comp / f32:.2f} |", "",
                  f"Held-out top-20 KL of the pruned SmolLM2 student over {storage['tokens']} tokens: "
                  f"{storage['kl_float32']:.5f} with float32 values, {storage['kl_compact']:.5f} reconstructed "
                  f"(difference {abs(storage['kl_compact'] - storage['kl_float32']):.1e} nats/token).", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-default", action="store_true", help="skip the full default run")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as d:
        dump = Path(d) / "plain-topk.json"
        gen = bench_generation(args.prompts, args.max_new_tokens, env, dump)
        storage = bench_storage(dump)
    default = None if args.skip_default else bench_default(env)
    from distill.artifacts import write_text_atomic

    write_text_atomic(Path(args.out), render(gen, default, storage))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
