"""Training a student on teacher rows with transformers' Trainer.

The Trainer supplies the loop (gradient accumulation, LR schedule, checkpoints,
resume, TensorBoard, progress bars); this module adds only the KD objective.
objective="kd" mixes top-k forward KL with cross-entropy; objective="sft" is plain
cross-entropy on the teacher's text (the baseline KD must beat).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from distill.data import Collator, RowDataset
from distill.losses import kd_objective
from distill.onpolicy import OnPolicy, Scorer
from teacher.hardware import bf16_is_fast


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 40  # optimizer steps
    batch_size: int = 4  # rows per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak LR (LoRA healing of a pruned student tolerates a high rate)
    warmup_steps: int = 2
    kd_weight: float = 0.9  # loss = kd_weight * top-k KL + (1 - kd_weight) * CE
    objective: str = "kd"  # "kd" or "sft" (cross-entropy only, for comparison)
    student_kind: str = "pruned"  # "pruned" teacher, "config" (small random model), or "checkpoint"
    student_layers: int = 0  # 0 = half the teacher's layers (pruned) / a quarter (config)
    student_checkpoint: str = ""  # HF folder or an embedded model's id (qwen2.5-coder-0.5b), for student_kind="checkpoint"
    lora_r: int = 16  # LoRA rank on every linear layer; 0 = train all weights (for from-scratch students)
    quantization: str = "none"  # "nf4": QLoRA, the frozen base in bitsandbytes 4-bit under the LoRA adapters
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    max_len: int = 512  # prompt + fable tokens per row
    save_steps: int = 20  # checkpoint every N steps (resume point after a kill)
    # Checkpoints kept on disk (the newest); 0 keeps all. The pipeline keeps all of the KD
    # student's when judge.checkpoints is on: each is a point of score against loss.
    keep_checkpoints: int = 2
    # "auto": bf16 autocast where the hardware multiplies bf16 natively (teacher/hardware.py:
    # about 2x faster on AVX512-BF16 CPUs, 300x slower where it is emulated), else fp32.
    precision: str = "auto"
    # On-policy distillation (TRL's GKD): this share of steps trains on completions the
    # student samples itself, scored by the served teacher (OPENAI_BASE_URL or `make serve`).
    on_policy: float = 0.0
    on_policy_max_new_tokens: int = 64
    # Drop training fables whose worst 40-word window a toxicity classifier scores above
    # this (alt-profanity-check probability); 1.0 keeps everything. What is removed is reported.
    max_toxicity: float = 1.0
    logging_steps: int = 5
    seed: int = 0

    def __post_init__(self):
        checks = {
            "steps": self.steps >= 1, "batch_size": self.batch_size >= 1, "grad_accum": self.grad_accum >= 1,
            "lr": 0 < self.lr < 1, "kd_weight": 0 <= self.kd_weight <= 1, "objective": self.objective in ("kd", "sft"),
            "student_kind": self.student_kind in ("pruned", "config", "checkpoint"), "student_layers": self.student_layers >= 0,
            "lora_r": self.lora_r >= 0, "quantization": self.quantization in ("none", "nf4"), "max_len": self.max_len >= 16, "save_steps": self.save_steps >= 1, "keep_checkpoints": self.keep_checkpoints >= 0,
            "precision": self.precision in ("auto", "bf16", "fp32"),
            "warmup_steps": self.warmup_steps >= 0, "logging_steps": self.logging_steps >= 1,
            "on_policy": 0 <= self.on_policy <= 1, "max_toxicity": 0 <= self.max_toxicity <= 1, "on_policy_max_new_tokens": self.on_policy_max_new_tokens >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid train setting {bad[0]}={getattr(self, bad[0])!r}")
        if self.on_policy and self.objective != "kd":
            raise ValueError("on_policy > 0 needs objective='kd': the teacher's logprobs are the target")
        if self.quantization == "nf4" and not self.lora_r:
            raise ValueError("quantization='nf4' (QLoRA) trains LoRA adapters on a frozen 4-bit base: set lora_r > 0")


def _on_policy(cfg: TrainConfig, scorer: Scorer | None, pad: int) -> OnPolicy | None:
    if not cfg.on_policy:
        return None
    if scorer is None:
        raise ValueError("on_policy > 0 needs the served teacher to score the student's samples")
    return OnPolicy(cfg.on_policy, scorer, cfg.on_policy_max_new_tokens, pad, cfg.max_len, seed=cfg.seed)


class KDTrainer(Trainer):
    """Trainer whose loss is the KD objective; logs its KD and CE parts."""

    def __init__(self, *args, kd_weight: float, on_policy: OnPolicy | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.kd_weight = kd_weight
        self.on_policy = on_policy
        self._parts: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        kd_weight = self.kd_weight
        if self.on_policy and self.on_policy.use_now(self.state.global_step):
            # Pure KD on the student's own samples: CE would reinforce whatever it wrote.
            inputs, kd_weight = self.on_policy.rebatch(model, inputs), 1.0
            self._parts["on_policy"].append(1.0)
        elif self.on_policy:
            self._parts["on_policy"].append(0.0)
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        mask = inputs["kd_mask"]
        # Only positions that predict a generated token reach the full-vocab softmax.
        sel = mask.bool()
        parts = kd_objective(
            out.logits[sel], inputs["labels"][sel], inputs["topk_ids"][sel], inputs["topk_logprobs"][sel],
            mask[sel], kd_weight,
        )
        for k in ("kd", "ce"):
            if k in parts:
                self._parts[k].append(float(parts[k].detach()))
        return (parts["loss"], out) if return_outputs else parts["loss"]

    def log(self, logs: dict, *args, **kwargs) -> None:
        for k, v in self._parts.items():
            if v:
                logs[f"train_{k}"] = round(sum(v) / len(v), 4)
        self._parts.clear()
        super().log(logs, *args, **kwargs)


def train(model, tokenizer, rows: list[dict], out_dir: Path, cfg: TrainConfig, scorer: Scorer | None = None) -> dict:
    """Train `model` (already wrapped with LoRA) on rows; resumes from the newest checkpoint.

    `scorer` (the served teacher, see distill.onpolicy) is needed when cfg.on_policy > 0."""
    out_dir = Path(out_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_steps,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.keep_checkpoints or None,
        bf16=cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_is_fast()),
        report_to=["tensorboard"],
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=cfg.seed,
        data_seed=cfg.seed,
    )
    trainer = KDTrainer(
        model=model,
        args=args,
        train_dataset=RowDataset(rows, cfg.max_len),
        data_collator=Collator(pad),
        kd_weight=cfg.kd_weight if cfg.objective == "kd" else 0.0,
        on_policy=_on_policy(cfg, scorer, pad),
    )
    ckpts = sorted((out_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    result = trainer.train(resume_from_checkpoint=str(ckpts[-1]) if ckpts else None)
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "resumed_from": ckpts[-1].name if ckpts else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "history": history,
        "final_loss": history[-1]["loss"] if history else math.nan,
    }
