"""The training settings of a run's `[train]` table: the one place each is declared and
documented. Kept apart from distill/train.py so that reading a config does not import
torch, transformers and peft (a wrong setting is reported in about a second)."""

from __future__ import annotations

from dataclasses import dataclass

from distill.settings import SettingError, check_ranges

# The divergences KD can train with (distill/losses.py); kept here so reading a config needs no torch.
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
from student import STUDENT_KINDS


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 40  # optimizer steps
    batch_size: int = 4  # rows per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak LR (LoRA healing of a pruned student tolerates a high rate)
    warmup_steps: int = 2
    kd_weight: float = 0.9  # loss = kd_weight * top-k KL + (1 - kd_weight) * CE
    # "kd" (a divergence to the teacher's stored top-k + CE) or "sft" (CE on the teacher's text
    # only, for comparison). A student of another tokenizer family gets both: its text is
    # re-tokenized, and for KD the teacher's top-k is carried onto its tokens (distill/align.py).
    objective: str = "kd"
    # KD's divergence over the teacher's top-k and its tail bucket: "forward_kl" KL(teacher ||
    # student), "reverse_kl" KL(student || teacher), or "jsd", GKD's generalized JSD with
    # jsd_beta (TRL's convention: 0 is forward KL, 1 reverse KL). Any k, from stored shards.
    divergence: str = "forward_kl"
    jsd_beta: float = 0.5
    # Across tokenizers: the weight of ULD's sorted distance on the teacher's top-k entries the
    # student has no token for (distill/losses.py sorted_distance); the rest meet the divergence.
    uld_weight: float = 1.0
    student_kind: str = "pruned"  # "pruned" teacher, "config" (small random model), or "checkpoint"
    student_layers: int = 0  # 0 = half the teacher's layers (pruned) / a quarter (config)
    student_checkpoint: str = ""  # HF folder or an embedded model's id (qwen2.5-coder-0.5b), for student_kind="checkpoint"
    lora_r: int = 16  # LoRA rank on every linear layer; 0 = train all weights (for from-scratch students)
    # "nf4": QLoRA, the frozen base in bitsandbytes 4-bit under the LoRA adapters; the merged
    # export is fp32. On CPU a 4-bit student refuses eval-mode/no-grad forwards before training
    # ends (they corrupt its gradients on AVX512-BF16 CPUs).
    quantization: str = "none"
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    max_len: int = 512  # prompt + fable tokens per row
    save_steps: int = 20  # checkpoint every N steps (resume point after a kill); TensorBoard logs in checkpoints/runs/
    # Checkpoints kept on disk (the newest); 0 keeps all. The pipeline keeps all of the KD
    # student's when judge.checkpoints is on: each is a point of score against loss.
    keep_checkpoints: int = 2
    # "auto": bf16 autocast where the hardware multiplies bf16 natively (teacher/hardware.py:
    # about 2x faster on AVX512-BF16 CPUs, 300x slower where it is emulated), else fp32.
    precision: str = "auto"
    # Recompute activations in the backward pass: less memory for longer rows or bigger
    # batches at about a third more compute (transformers' gradient_checkpointing).
    gradient_checkpointing: bool = False
    # On-policy distillation (TRL's GKD): this share of steps trains on completions the
    # student samples itself, scored by the served teacher (OPENAI_BASE_URL or `make serve`).
    on_policy: float = 0.0
    on_policy_max_new_tokens: int = 64
    # Drop training fables whose worst 40-word window a toxicity classifier scores above
    # this (alt-profanity-check probability); 1.0 keeps everything. What is removed is reported.
    max_toxicity: float = 1.0
    logging_steps: int = 5
    seed: int = 0
    # Ray Train workers (distill/train_ray.py): 1 trains in the pipeline's process; N > 1 runs
    # a TorchTrainer of N DDP workers (NCCL on GPUs, gloo on CPU), each taking batch_size rows
    # per micro-batch, so the effective batch is batch_size x grad_accum x workers.
    workers: int = 1
    # Training rows are streamed from the shards (distill/stream.py) through a shuffle buffer
    # of this many rows; memory grows with it, never with the dataset.
    shuffle_buffer: int = 1024
    # Where Ray Train keeps its checkpoints and results when workers > 1: a folder every node
    # sees (a shared filesystem) or a bucket ("s3://bucket/runs"). Empty: the run folder's
    # ray-train/, on one machine only (refused on a cluster of several nodes): nothing is read
    # back from a worker's own disk.
    storage_path: str = ""
    # Ray Train restarts a worker group that lost a worker (a node gone, a process killed) up
    # to this many times, from the newest checkpoint in storage_path.
    max_failures: int = 3

    def __post_init__(self):
        check_ranges(self, {
            "steps": (self.steps >= 1, "must be >= 1"), "batch_size": (self.batch_size >= 1, "must be >= 1"),
            "grad_accum": (self.grad_accum >= 1, "must be >= 1"), "lr": (0 < self.lr < 1, "must be in (0, 1)"),
            "warmup_steps": (self.warmup_steps >= 0, "must be >= 0"),
            "kd_weight": (0 <= self.kd_weight <= 1, "must be in [0, 1]"),
            "objective": (self.objective in ("kd", "sft"), "must be 'kd' or 'sft' (the divergence is train.divergence)"),
            "divergence": (self.divergence in DIVERGENCES, f"must be one of {', '.join(repr(d) for d in DIVERGENCES)}"),
            "jsd_beta": (0 <= self.jsd_beta <= 1, "must be in [0, 1]"),
            "uld_weight": (self.uld_weight >= 0, "must be >= 0"),
            "student_kind": (self.student_kind in STUDENT_KINDS, f"must be one of {', '.join(STUDENT_KINDS)}"),
            "student_layers": (self.student_layers >= 0, "must be >= 0"), "lora_r": (self.lora_r >= 0, "must be >= 0"),
            "quantization": (self.quantization in ("none", "nf4"), "must be 'none' or 'nf4'"),
            "lora_alpha": (self.lora_alpha >= 1, "must be >= 1"),
            "lora_dropout": (0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            "max_len": (self.max_len >= 16, "must be >= 16"), "save_steps": (self.save_steps >= 1, "must be >= 1"),
            "keep_checkpoints": (self.keep_checkpoints >= 0, "must be >= 0"),
            "precision": (self.precision in ("auto", "bf16", "fp32"), "must be 'auto', 'bf16' or 'fp32'"),
            "on_policy": (0 <= self.on_policy <= 1, "must be in [0, 1]"),
            "on_policy_max_new_tokens": (self.on_policy_max_new_tokens >= 1, "must be >= 1"),
            "max_toxicity": (0 <= self.max_toxicity <= 1, "must be in [0, 1]"),
            "logging_steps": (self.logging_steps >= 1, "must be >= 1"), "seed": (self.seed >= 0, "must be >= 0"),
            "workers": (self.workers >= 1, "must be >= 1"),
            "shuffle_buffer": (self.shuffle_buffer >= 1, "must be >= 1"),
            "max_failures": (self.max_failures >= 0, "must be >= 0"),
        })
        if self.objective == "sft" and (self.divergence, self.jsd_beta) != ("forward_kl", 0.5):
            raise SettingError("divergence", f"{self.divergence!r} with objective = 'sft': SFT is cross-entropy on the "
                                             "teacher's text, with no divergence to its top-k (use objective = 'kd')")
        if self.jsd_beta != 0.5 and self.divergence != "jsd":
            raise SettingError("jsd_beta", f"{self.jsd_beta} applies only with divergence = 'jsd' "
                                           f"(this one is {self.divergence!r})")
        if self.on_policy and self.objective != "kd":
            raise SettingError("on_policy", f"{self.on_policy} needs objective='kd': the teacher's logprobs are the target")
        if self.workers > 1 and self.on_policy:
            raise SettingError("workers", f"{self.workers} with on_policy > 0: on-policy steps run in one process")
        if self.quantization == "nf4" and not self.lora_r:
            raise SettingError("quantization", "'nf4' (QLoRA) trains LoRA adapters on a frozen 4-bit base: "
                                               "set lora_r > 0")
