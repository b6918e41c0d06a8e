"""Student training on several workers through Ray Train: a TorchTrainer whose workers
each run distill.train.train (transformers' Trainer, prepared by Ray's transformers
integration) under DDP, NCCL on GPUs and gloo on CPU.

    python -m distill.pipeline --config configs/tiny.toml --set train.workers=2

Every worker builds the same seeded student and reads the same rows; the Trainer's
distributed sampler gives each its share, and DDP averages the gradients, so N workers of
batch_size rows take the steps one process of N x batch_size rows would. Rank 0 writes the
checkpoints and runs `finish` (the export) on its trained model.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

from distill.run_folder import StudentFolder
from distill.train_config import TrainConfig


def train_on_ray(build: Callable, rows: list[dict], out_dir: Path, cfg: TrainConfig,
                 finish: Callable | None = None) -> dict:
    """build() -> (model with adapters, tokenizer), called in each worker; finish(model, tok,
    result) runs on rank 0 after training. Returns rank 0's result."""
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray_cluster.cluster import connect

    # Absolute before any worker starts: Ray Train runs each worker in a folder of its own, where
    # a relative run folder (the default, runs/<name>) would name another place.
    out_dir = Path(out_dir).resolve()
    use_gpu = torch.cuda.is_available()

    def loop(_config):
        import ray.train
        from ray.train.huggingface.transformers import prepare_trainer

        from distill.train import train

        model, tok = build()
        result = train(model, tok, rows, out_dir, cfg, prepare=prepare_trainer)
        if ray.train.get_context().get_world_rank() != 0:
            ray.train.report({"steps": result["steps"]})
            return
        if finish is not None:
            finish(model, tok, result)
        # Rank 0's result goes back as a Ray Train checkpoint, through the run's storage, not
        # as a file in a worker's folder.
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "result.json").write_text(json.dumps(result))
            ray.train.report({"steps": result["steps"]}, checkpoint=ray.train.Checkpoint.from_directory(d))

    connect()
    trainer = TorchTrainer(
        loop,
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=str(StudentFolder(out_dir).ray_train), name="train"),
    )
    with trainer.fit().checkpoint.as_directory() as d:
        return json.loads((Path(d) / "result.json").read_text())
