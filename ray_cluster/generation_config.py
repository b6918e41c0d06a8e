"""The [generation] settings of a teacher: what it writes (sampling, samples per prompt,
top-k kept) and how the Ray Data LLM job runs (replicas, batching, resources)."""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.settings import check_ranges, type_problem
from teacher.engine import default_kv_cache_gib


@dataclass(frozen=True)
class GenerationConfig:
    top_k: int = 20  # teacher alternatives kept per generated token
    max_new_tokens: int = 160  # fable length cap, in tokens
    temperature: float = 1.0
    top_p: float = 1.0
    train_samples: int = 1  # completions per training prompt
    eval_samples: int = 1  # completions per evaluation prompt
    shard_size: int = 16  # rows per Parquet shard: the unit of resumption
    batch_size: int = 32  # rows per Ray Data batch; 8 batches are in flight (Ray Data LLM default)
    max_model_len: int = 1024
    # CPU engines: RAM reserved for the KV cache (default: VLLM_CPU_KVCACHE_SPACE, else 2)
    kv_cache_gib: int = field(default_factory=default_kv_cache_gib)
    retries: int = 1  # extra passes over rows the engine failed on, before recording them as failed
    # Data-parallel engine replicas of the teacher (Ray Data LLM's concurrency): each is a
    # whole engine with its own placement group, so Ray puts them where resources are, on
    # as many nodes as it takes.
    replicas: int = 1
    # Extra Ray resources each engine bundle asks for, e.g. {teacher_node = 1}: a custom
    # resource that only some nodes declare (`ray start --resources`) keeps the engines on
    # those nodes, one replica per unit.
    engine_resources: dict = field(default_factory=dict)
    # Seconds to wait for every replica to start before any row is sent; a cluster that
    # cannot place them all in time fails with the reason. 0 = start with the first engine up.
    replica_wait_s: int = 1800
    trust_remote_code: bool = False

    def __post_init__(self):
        check_ranges(self, {
            "top_k": (self.top_k >= 1, "must be >= 1"), "max_new_tokens": (self.max_new_tokens >= 1, "must be >= 1"),
            "temperature": (self.temperature >= 0, "must be >= 0"), "top_p": (0 < self.top_p <= 1, "must be in (0, 1]"),
            "train_samples": (self.train_samples >= 1, "must be >= 1"),
            "eval_samples": (self.eval_samples >= 1, "must be >= 1"),
            "shard_size": (self.shard_size >= 1, "must be >= 1"), "batch_size": (self.batch_size >= 1, "must be >= 1"),
            "max_model_len": (self.max_model_len > self.max_new_tokens, "must be more than max_new_tokens"),
            "kv_cache_gib": (self.kv_cache_gib >= 1, "must be >= 1"), "retries": (self.retries >= 0, "must be >= 0"),
            "replicas": (self.replicas >= 1, "must be >= 1"), "replica_wait_s": (self.replica_wait_s >= 0, "must be >= 0"),
            "engine_resources": (isinstance(self.engine_resources, dict) and all(
                isinstance(k, str) and k not in ("CPU", "GPU") and type_problem(float, v) is None and v > 0
                for k, v in self.engine_resources.items()),
                "must map custom resource names (not CPU or GPU) to positive numbers"),
        })


# How a job runs, not what it generates: a resumed job may change them (more replicas on a
# bigger cluster) and still continue the same plan.
EXECUTION_SETTINGS = ("replicas", "engine_resources", "replica_wait_s", "batch_size", "retries", "kv_cache_gib")
