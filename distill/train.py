"""Training a student on teacher rows with transformers' Trainer.

The Trainer supplies the loop (gradient accumulation, LR schedule, checkpoints,
resume, TensorBoard, progress bars); this module adds only the KD objective.
objective="kd" mixes a divergence to the teacher's stored top-k (train.divergence) with
cross-entropy; objective="sft" is plain cross-entropy on the teacher's text (the baseline KD
must beat).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from distill import artifacts
from distill.data import pad_id, scored_logits
from distill.losses import kd_objective
from distill.onpolicy import OnPolicy, Scorer
from distill.run_folder import StudentFolder
from distill.stream import Batches, TrainingShards, endless, in_memory
from distill.train_config import TrainConfig
from teacher.hardware import bf16_is_fast


def _on_policy(cfg: TrainConfig, scorer: Scorer | None, pad: int) -> OnPolicy | None:
    if not cfg.on_policy:
        return None
    if scorer is None:
        raise ValueError("on_policy > 0 needs the served teacher to score the student's samples")
    return OnPolicy(cfg.on_policy, scorer, cfg.on_policy_max_new_tokens, pad, cfg.max_len, seed=cfg.seed)


class KDTrainer(Trainer):
    """Trainer whose loss is the KD objective; logs its KD and CE parts.

    The loss of an optimizer step is the mean over every KD position of the step: each
    micro-batch's sum is divided by the count over all micro-batches of the step (and all
    DDP ranks), as transformers does for its own causal-LM loss, so grad_accum x batch
    gives the update one batch of that size gives."""

    def __init__(self, *args, kd_weight: float, on_policy: OnPolicy | None = None, divergence: str = "forward_kl",
                 jsd_beta: float = 0.5, uld_weight: float = 1.0, sources: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.kd_weight = kd_weight
        self.on_policy = on_policy
        self.divergence, self.jsd_beta, self.uld_weight = divergence, jsd_beta, uld_weight
        self.sources = sources  # the teachers of a multi-teacher student: its loss is logged per teacher
        self.carried = [0.0, 0.0]  # positions that carried the teacher's top-k, of all positions trained on
        self._parts: dict[str, list[float]] = defaultdict(list)
        # The Trainer divides a step's loss by grad_accum itself unless it believes the model
        # normalises by num_items_in_batch, which it guesses from forward(**kwargs). This loss
        # always does (compute_loss), whatever the model's signature.
        self.model_accepts_loss_kwargs = True

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor:
        """The step's KD positions: kd_mask summed over its micro-batches (and ranks)."""
        n = sum(b["kd_mask"].sum() for b in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            n = self.accelerator.gather(n).sum()
        return n

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        kd_weight, rebatched = self.kd_weight, False
        if self.on_policy and self.on_policy.use_now(self.state.global_step):
            # Pure KD on the student's own samples: CE would reinforce whatever it wrote.
            inputs, kd_weight, rebatched = self.on_policy.rebatch(model, inputs), 1.0, True
            self._parts["on_policy"].append(1.0)
        elif self.on_policy:
            self._parts["on_policy"].append(0.0)
        logits, cut = scored_logits(model, inputs)
        mask = cut["kd_mask"]
        # Only positions that predict a generated token reach the full-vocab softmax.
        sel = mask.bool()
        ids = cut["topk_ids"][sel]
        matched = ids >= 0  # across tokenizers, -1: a teacher entry the student has no token for
        parts = kd_objective(
            logits[sel], cut["labels"][sel], ids, cut["topk_logprobs"][sel], mask[sel], kd_weight,
            divergence=self.divergence, beta=self.jsd_beta, uld_weight=self.uld_weight,
            aligned=cut["kd_aligned"][sel] if "kd_aligned" in cut else None,
            matched=None if bool(matched.all()) else matched,
            weight=cut["row_weight"][sel] if "row_weight" in cut else None,
        )
        for k in ("kd", "ce", "uld"):
            if k in parts:
                self._parts[k].append(float(parts[k].detach()))
        if "kd_aligned" in cut and not rebatched:
            self.carried[0] += float(cut["kd_aligned"][sel].sum())
            self.carried[1] += float(sel.sum())
        if len(self.sources) > 1 and "source" in cut:
            src = cut["source"][sel]
            carries = cut["kd_aligned"][sel] > 0 if "kd_aligned" in cut else torch.ones_like(src, dtype=torch.bool)
            for i, name in enumerate(self.sources):
                here = src == i
                if here.any():
                    self._parts[f"ce_{name}"].append(float(parts["ce_tok"][here].mean()))
                    if "kd_tok" in parts and (here & carries).any():
                        self._parts[f"kd_{name}"].append(float(parts["kd_tok"][here & carries].mean()))
        loss = parts["loss"]
        if num_items_in_batch is not None:
            if rebatched:  # the student's own samples: not the positions the step counted
                loss = loss / self.current_gradient_accumulation_steps
            else:  # this micro-batch's sum over the step's count (the parts are means)
                loss = loss * mask.sum() / num_items_in_batch
                if self.args.average_tokens_across_devices and self.args.world_size > 1:
                    loss = loss * self.accelerator.num_processes  # DDP averages the ranks' gradients
        return (loss, {"logits": logits}) if return_outputs else loss

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The stream's batches as they come: already collated and already each rank's own
        share (accelerate's dispatching of an iterable from rank 0 would undo Ray Data's split)."""
        if isinstance(self.train_dataset, Batches):
            return torch.utils.data.DataLoader(self.train_dataset, batch_size=None)
        return super().get_train_dataloader()

    def log(self, logs: dict, *args, **kwargs) -> None:
        for k, v in self._parts.items():
            if v:
                logs[f"train_{k}"] = round(sum(v) / len(v), 4)
        self._parts.clear()
        super().log(logs, *args, **kwargs)


def passes(data, cfg: TrainConfig):
    if isinstance(data, TrainingShards):
        return data.passes(cfg.seed)
    if isinstance(data, list):
        return in_memory(data, cfg.max_len)
    return data


def train(model, tokenizer, data, out_dir: Path, cfg: TrainConfig, scorer: Scorer | None = None,
          prepare=None) -> dict:
    """Train `model` (already wrapped with LoRA) on `data`; resumes from the newest checkpoint.

    `data`: TrainingShards (streamed from disk), rows in memory (a list of schema rows), or
    a function of the pass number giving that pass's encoded rows (a Ray Train worker's
    share of a Ray Data dataset).

    `scorer` (the served teacher, see distill.onpolicy) is needed when cfg.on_policy > 0.
    `prepare`: applied to the Trainer before training (Ray Train's prepare_trainer in a
    distributed worker, where the Trainer runs DDP over the process group Ray set up)."""
    out_dir = Path(out_dir)
    pad = pad_id(tokenizer)
    args = TrainingArguments(
        output_dir=str(StudentFolder(out_dir).checkpoints),
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
        gradient_checkpointing=cfg.gradient_checkpointing,
        # Non-reentrant: works with frozen (LoRA) bases without making inputs require grad.
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
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
        train_dataset=Batches(lambda: endless(passes(data, cfg), cfg.seed, cfg.shuffle_buffer), cfg.batch_size, pad),
        kd_weight=cfg.kd_weight if cfg.objective == "kd" else 0.0,
        on_policy=_on_policy(cfg, scorer, pad),
        divergence=cfg.divergence, jsd_beta=cfg.jsd_beta, uld_weight=cfg.uld_weight,
        sources=getattr(data, "source_names", ()),
    )
    if prepare is not None:
        trainer = prepare(trainer)
    ckpts = artifacts.checkpoints(StudentFolder(out_dir).checkpoints)
    result = trainer.train(resume_from_checkpoint=str(ckpts[-1]) if ckpts else None)
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "resumed_from": ckpts[-1].name if ckpts else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "history": history,
        "final_loss": history[-1]["loss"] if history else math.nan,
        "workers": args.world_size,
        "effective_batch": cfg.batch_size * cfg.grad_accum * args.world_size,
        "aligned_share": trainer.carried[0] / trainer.carried[1] if trainer.carried[1] else None,
        "divergence": cfg.divergence,
    }
