"""Peak memory and rows/s of the training data path at 2,000, 20,000 and 200,000 rows.

    python -m benchmarks.scale --make DIR                        # 2,000 synthetic rows, the schema's writer
    python -m benchmarks.scale --path DIR --rows 20000 --way one # one measurement, in its own process

Rows have production's shape (configs/production.toml): a 60-token prompt, 400 generated
tokens, the top-20 of a 32,000-token vocabulary with logprobs as a teacher gives them.
The 2,000 rows are written once by distill.schema's writer (16 a shard, as generation
writes them); larger datasets are the same shards linked under more names, so every size is
read from disk, decoded and checksummed shard by shard as training would.

`one`: one process streams a full pass of TrainingShards into batches (what
`train.workers = 1` trains on). `ray`: Ray Data feeds two Ray Train workers their shares
(get_dataset_shard), each batching a full pass of its share (`train.workers = 2`). What is
measured is the data path without the model: the memory it needs is its peak resident
memory above the start (AnonPeak), anonymous and, for Ray, the object store's shared pages
the process reads its rows from, in the driver and in a training worker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BASE_ROWS, SHARD_ROWS = 2000, 16
PROMPT, GENERATED, TOP_K, VOCAB = 60, 400, 20, 32000
BATCH, BUFFER = 4, 1024


def synthetic_row(rng, i: int) -> dict:
    import numpy as np

    ids = rng.integers(0, VOCAB, size=(GENERATED, TOP_K))
    p = rng.dirichlet(np.full(TOP_K, 0.3), size=GENERATED) * 0.95  # the tail outside the top-20: 5%
    lp = np.sort(np.log(np.maximum(p, 1e-30)), axis=1)[:, ::-1]
    return {"prompt_id": f"p{i}", "split": "train", "character": "fox", "trait": "sly", "setting": "wood",
            "conflict": "a drought", "resolution": "shares", "moral": "kindness", "variant": 0,
            "instruction": "Write a fable.", "sample_index": 0, "prompt_text": "Write a fable. " * 15,
            "prompt_token_ids": rng.integers(0, VOCAB, PROMPT).tolist(), "text": "The fox and the crow. " * 60,
            "token_ids": ids[:, 0].tolist(), "token_logprobs": lp[:, 0].tolist(), "topk_ids": ids.tolist(),
            "topk_logprobs": lp.tolist(), "teacher_id": "synthetic", "sampling": "{}", "tokenizer_fingerprint": "synthetic"}


def make(out: Path, rows: int = BASE_ROWS) -> dict:
    import numpy as np

    from distill.schema import write_table_atomic

    rng = np.random.default_rng(0)
    for s in range(rows // SHARD_ROWS):
        shard = [synthetic_row(rng, s * SHARD_ROWS + j) for j in range(SHARD_ROWS)]
        write_table_atomic(shard, out / f"base-{s:05d}.parquet", vocab_size=VOCAB)
    return {"rows": rows, "bytes": sum(f.stat().st_size for f in out.glob("*.parquet"))}


def dataset(base: Path, rows: int, into: Path):
    """`rows` training rows: the base shards linked under as many names as it takes."""
    from distill.stream import TrainingShards

    shards = sorted(base.glob("base-*.parquet"))
    into.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(rows // SHARD_ROWS):
        f = into / f"{n:06d}.parquet"
        if not f.exists():
            os.link(shards[n % len(shards)], f)
        files.append(str(f))
    return TrainingShards(files=tuple(files), rows=len(files) * SHARD_ROWS, max_len=PROMPT + GENERATED)


def stream_pass(rows_of_pass, n_rows: int) -> dict:
    """Batches of a full pass of `n_rows` rows: positions batched, and rows/s from the first
    row on (what comes before it, Ray Data's executor starting, is reported apart)."""
    from distill.stream import Batches, endless

    start, first = time.perf_counter(), []

    def stamped(epoch):
        for row in rows_of_pass(epoch):
            if not first:
                first.append(time.perf_counter())
            yield row

    tokens, batches = 0, iter(Batches(lambda: endless(stamped, 0, BUFFER), BATCH, 0))
    for _ in range(n_rows // BATCH):
        tokens += int(next(batches)["kd_mask"].sum())
    end = time.perf_counter()
    return {"tokens": tokens, "rows_per_s": n_rows / (end - first[0]), "first_row_s": first[0] - start}


def measure_one(data) -> dict:
    from benchmarks.prune import AnonPeak

    peak = AnonPeak()
    figures = stream_pass(data.passes(0), data.rows)
    return {"driver_peak": peak.stop(), "worker_peak": None, **figures}


def measure_ray(data) -> dict:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from benchmarks.prune import AnonPeak
    from distill.train_ray import data_config

    peak = AnonPeak(shared=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    def loop(_):
        import ray.train

        from benchmarks.prune import AnonPeak

        from distill.stream import ray_passes

        shard, mine = ray.train.get_dataset_shard("train"), data.rows // 2
        worker = AnonPeak(shared=True)
        figures = stream_pass(ray_passes(shard), mine)
        figures.update(worker_peak=worker.stop(), rows_per_s=2 * figures["rows_per_s"])  # two workers alike
        if ray.train.get_context().get_world_rank():
            ray.train.report(figures)
            return
        with tempfile.TemporaryDirectory() as d:  # Ray Train hands a worker's figures back in a checkpoint
            (Path(d) / "figures.json").write_text(json.dumps(figures))
            ray.train.report(figures, checkpoint=ray.train.Checkpoint.from_directory(d))

    with_storage = Path(data.files[0]).parent / "ray-train"
    result = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                          datasets={"train": data.dataset(0)}, dataset_config=data_config(),
                          run_config=RunConfig(storage_path=str(with_storage), name="scale")).fit()
    with result.checkpoint.as_directory() as d:
        figures = json.loads((Path(d) / "figures.json").read_text())
    ray.shutdown()
    return {"driver_peak": peak.stop(), **figures}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    ap.add_argument("--make", type=Path)
    ap.add_argument("--path", type=Path)
    ap.add_argument("--rows", type=int, default=BASE_ROWS)
    ap.add_argument("--way", choices=("one", "ray"), default="one")
    args = ap.parse_args(argv)
    if args.make:
        print(json.dumps(make(args.make)))
        return
    import torch  # noqa: F401  (imported before the baseline, as by any trainer)

    data = dataset(args.path, args.rows, args.path / f"rows-{args.rows}")
    out = measure_one(data) if args.way == "one" else measure_ray(data)
    print(json.dumps({"way": args.way, "rows": data.rows, **out}))


if __name__ == "__main__":
    sys.exit(main())
