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

    out_dir = Path(out_dir)
    result_file = StudentFolder(out_dir).ray_train_result
    use_gpu = torch.cuda.is_available()

    def loop(_config):
        import ray.train
        from ray.train.huggingface.transformers import prepare_trainer

        from distill.artifacts import write_json_atomic
        from distill.train import train

        model, tok = build()
        result = train(model, tok, rows, out_dir, cfg, prepare=prepare_trainer)
        if ray.train.get_context().get_world_rank() == 0:
            if finish is not None:
                finish(model, tok, result)
            write_json_atomic(result_file, result)
        ray.train.report({"steps": result["steps"]})

    connect()
    trainer = TorchTrainer(
        loop,
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=str(StudentFolder(out_dir).ray_train.resolve()), name="train"),
    )
    trainer.fit()
    return json.loads(result_file.read_text())
