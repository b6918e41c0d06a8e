"""Student training on several workers through Ray Train: a TorchTrainer whose workers
each run distill.train.train (transformers' Trainer, prepared by Ray's transformers
integration) under DDP, NCCL on GPUs and gloo on CPU.

    python -m distill.pipeline --config configs/tiny.toml --set train.workers=2

The rows come from Ray Data: each worker streams its share (get_dataset_shard), split in a
fixed order (preserve_order), so N workers of batch_size rows take the steps one process of
N x batch_size rows would, and a restarted worker group reads what the lost one would have.

Nothing is read back from a worker's own disk, so no shared filesystem is assumed: every
checkpoint goes to Ray Train's storage (train.storage_path: a bucket on a cluster without
a shared filesystem), a worker group restarted after a failure (train.max_failures)
resumes from the newest one, and rank 0's exported student and result come back to the
driver in the last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from distill.run_folder import StudentFolder
from distill.train_config import TrainConfig

EXPORT = "student"  # the folder of the final checkpoint holding rank 0's export
RESULT = "result.json"


def storage(cfg: TrainConfig, out_dir: Path) -> str:
    """Where Ray Train keeps checkpoints: the setting, or the run folder's ray_train/."""
    return cfg.storage_path or str(StudentFolder(out_dir).ray_train)


def ray_dataset(data, cfg: TrainConfig):
    """The training rows as a Ray Data dataset: streamed shards, or rows in memory (tests)."""
    import ray.data

    from distill.data import encode_row
    from distill.stream import TrainingShards

    if isinstance(data, TrainingShards):
        return data.dataset(cfg.seed)
    return ray.data.from_items([encode_row(r, cfg.max_len) for r in data])


def check_storage(cfg: TrainConfig) -> None:
    """Refuse the default storage (the run folder, on the driver's disk) on a cluster of
    several nodes: a worker elsewhere would checkpoint to a disk the driver never reads."""
    import ray

    nodes = sum(1 for n in ray.nodes() if n["Alive"])
    if nodes > 1 and not cfg.storage_path:
        raise ValueError(f"train.workers = {cfg.workers} on a cluster of {nodes} nodes needs train.storage_path: a "
                         "bucket (s3://…, gs://…) or a folder every node mounts; the default, the run folder, is on "
                         "the driver's disk only")


def data_config():
    """A fixed order of blocks to workers, whatever node asks first: the same rows per step on
    every run, and after a restart."""
    from ray.data import ExecutionOptions
    from ray.train import DataConfig

    return DataConfig(execution_options=ExecutionOptions(preserve_order=True), enable_shard_locality=False)


def restore(checkpoint, into: Path) -> None:
    """A Ray Train checkpoint of the Trainer's (Ray's RayTrainReportCallback puts it in
    checkpoint/) as checkpoints/checkpoint-<step> under `into`, where train() resumes from it."""
    with checkpoint.as_directory() as d:
        src = Path(d) / "checkpoint"
        if not src.is_dir():
            return
        step = json.loads((src / "trainer_state.json").read_text())["global_step"]
        shutil.copytree(src, StudentFolder(into).checkpoints / f"checkpoint-{step}", dirs_exist_ok=True)


def train_on_ray(build: Callable, data, out_dir: Path, cfg: TrainConfig, finish: Callable | None = None,
                 resources_per_worker: dict | None = None) -> dict:
    """build() -> (model with adapters, tokenizer), called in each worker; finish(model, tok,
    result, folder) exports rank 0's model into `folder`. `data`: TrainingShards or rows.
    Returns rank 0's result, its export copied into out_dir."""
    import torch
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray_cluster.cluster import connect

    # Absolute before any worker starts: Ray Train runs each worker in a folder of its own, where
    # a relative run folder (the default, runs/<name>) would name another place.
    out_dir = Path(out_dir).resolve()
    use_gpu = torch.cuda.is_available()

    def loop(_config):
        import ray.train
        from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

        from distill.stream import ray_passes
        from distill.train import train

        shard = ray.train.get_dataset_shard("train")
        model, tok = build()
        with tempfile.TemporaryDirectory(prefix="fable-kd-worker-") as scratch:
            # The worker's own disk: the Trainer's checkpoints are written here, then copied to
            # Ray Train's storage by Ray's callback; a restarted worker resumes from there.
            if (latest := ray.train.get_checkpoint()) is not None:
                restore(latest, Path(scratch))

            def prepare(trainer):
                trainer.add_callback(RayTrainReportCallback())
                return prepare_trainer(trainer)

            result = train(model, tok, ray_passes(shard), Path(scratch), cfg, prepare=prepare)
            if ray.train.get_context().get_world_rank() != 0:
                ray.train.report({"steps": result["steps"]})
                return
            with tempfile.TemporaryDirectory() as d:
                export = Path(d) / EXPORT
                if finish is not None:
                    finish(model, tok, result, export)
                # Paths into the export, as they will be on the driver (relative until then).
                result["exported"] = {k: str(Path(v).relative_to(export)) for k, v in result.items()
                                      if isinstance(v, str) and Path(v).is_relative_to(export)}
                (Path(d) / RESULT).write_text(json.dumps(result))
                ray.train.report({"steps": result["steps"]}, checkpoint=ray.train.Checkpoint.from_directory(d))

    connect()
    check_storage(cfg)
    keep = cfg.keep_checkpoints + 1 if cfg.keep_checkpoints else None  # and the final one, holding the export
    trainer = TorchTrainer(
        loop,
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker),
        datasets={"train": ray_dataset(data, cfg)},
        dataset_config=data_config(),
        run_config=RunConfig(storage_path=storage(cfg, out_dir), name="train",
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep)),
    )
    fitted = trainer.fit()
    with fitted.checkpoint.as_directory() as d:
        result = json.loads((Path(d) / RESULT).read_text())
        if (Path(d) / EXPORT).is_dir():
            shutil.copytree(Path(d) / EXPORT, out_dir, dirs_exist_ok=True)
    # The Trainer's checkpoints too, where the single-process run keeps them (the judge scores each).
    for ckpt, _ in fitted.best_checkpoints:
        restore(ckpt, out_dir)
    exported = result.pop("exported")
    return {**result, **{k: str(out_dir / rel) for k, rel in exported.items()}}
