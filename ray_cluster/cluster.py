"""Connect to the Ray cluster named by RAY_ADDRESS, or start a local head.

A local head gets more logical CPUs than the machine has cores: Ray Data LLM keeps
one actor per pipeline stage, and with only 2 logical CPUs the engine stage is
never scheduled on a 2-core laptop.

A local head's node address is 127.0.0.1, so the parts of Ray that follow it (dashboard,
Ray client server, agents' HTTP) stay on loopback. Its GCS, raylet and workers listen on
every interface whatever the address (Ray 2.60 has no setting for it); token auth, which Ray
turns on for a new local head unless RAY_AUTH_MODE says otherwise, is what guards them.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distill.redact import redact

LOCAL_LOGICAL_CPUS = 8
LOOPBACK = "127.0.0.1"

log = logging.getLogger(__name__)
# Local heads this process has started: a pipeline run starts one and keeps it to the end.
heads_started = 0
# Engine placement groups this process removed after its batch jobs (releasing_engines).
groups_removed = 0
_batch = {"running": 0, "before": set()}
_batch_lock = threading.Lock()


def connect() -> dict:
    """Return a description of the cluster we are attached to."""
    import ray

    global heads_started
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # "local", not None: None joins whatever cluster /tmp/ray/ray_current_cluster last
            # named (a stale file from any earlier `ray start` on the machine) and then
            # refuses num_cpus.
            ray.init(
                address="local",
                num_cpus=max(LOCAL_LOGICAL_CPUS, os.cpu_count() or 1),
                include_dashboard=False,
                dashboard_host=LOOPBACK,
                _node_ip_address=LOOPBACK,
                log_to_driver=False,
            )
            heads_started += 1
            if not token_auth_on():
                log.warning("Ray token auth is off (RAY_AUTH_MODE=%s): this head's GCS, raylet and worker ports "
                            "listen on every interface and accept anyone who reaches them",
                            os.environ.get("RAY_AUTH_MODE"))
    res = ray.cluster_resources()
    return {"address": os.environ.get("RAY_ADDRESS", "local"), "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0)}


def request_started(row: dict) -> float:
    """Epoch seconds at which the engine began a Ray Data LLM output row: now (its postprocess)
    minus vLLM's own time on it; +inf for a row the engine failed on."""
    took = row.get("time_taken_llm")
    return time.time() - took if took is not None and took >= 0 else math.inf


@dataclass
class EngineStarts:
    """Engines started by batch jobs and the seconds they took: from the job's first pull to the
    first request an engine began (`request_started`), so model load, warm-up and Ray's
    scheduling, plus at most one batch's buffering."""

    count: int = 0
    seconds: float = 0.0

    def timed(self, rows: Iterable[dict], engines: int = 1) -> Iterator[dict]:
        """Pass a job's output rows through, timing its engine start; counted once the job ends."""
        t0, first = time.time(), math.inf
        for row in rows:
            first = min(first, row.get("started", math.inf))
            yield row
        self.count += engines
        if first < math.inf:
            self.seconds += max(0.0, first - t0)

    def add(self, seconds: float, engines: int = 1) -> None:
        self.count += engines
        self.seconds += seconds

    def figures(self) -> dict:
        return {"engine_starts": self.count, "engine_start_s": round(self.seconds, 1)}


def _engine_groups() -> dict[str, dict]:
    """Live placement groups of batch-job engines: Ray Data LLM's are unnamed (Serve names
    its replicas' groups, the judge's among them)."""
    import ray

    return {pg: info for pg, info in ray.util.placement_group_table().items()
            if not info.get("name") and info.get("state") != "REMOVED"}


def engine_groups_held() -> int:
    return len(_engine_groups())


@contextmanager
def releasing_engines():
    """Around a batch job's engines (generation, scoring, the students' fables): Ray Data LLM
    gives every engine replica a placement group and never removes it, so under a driver that
    lives on (the pipeline) a teacher's GPUs stay reserved through training, and the next
    teacher's engine waits for them until Ray Data's replica timeout. The unnamed groups made
    while batch jobs run are removed when the last running one ends (teachers generating side
    by side share the window), killing nothing of theirs that is still needed."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    global groups_removed
    with _batch_lock:
        if _batch["running"] == 0:
            _batch["before"] = set(_engine_groups())
        _batch["running"] += 1
    try:
        yield
    finally:
        with _batch_lock:
            _batch["running"] -= 1
            if _batch["running"] == 0 and ray.is_initialized():
                for pg in set(_engine_groups()) - _batch["before"]:
                    ray.util.remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg))))
                    groups_removed += 1


def token_auth_on() -> bool:
    """Whether this process's Ray talks to its cluster with token auth (RAY_AUTH_MODE=token,
    or Ray's default for a new local head)."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return bool(is_token_auth_enabled())


def shutdown() -> None:
    import ray

    if ray.is_initialized() and not os.environ.get("RAY_ADDRESS"):
        ray.shutdown()


def engine_bundles(teacher, gpus: float, remote: bool | None = None, resources: dict | None = None) -> list[dict]:
    """Placement bundles for one vLLM engine: one GPU per tensor-parallel rank for a teacher
    that needs GPUs (gpu_memory_gib > 0), a single CPU bundle for a CPU teacher. `resources`
    (generation.engine_resources) are added to every bundle: custom resources that only
    some nodes have pin the engines to those nodes, one engine per unit.

    The GPU request stands even when the cluster has no GPU yet: on a cluster (RAY_ADDRESS)
    it is what makes the autoscaler start a GPU worker. A local head has no autoscaler, so
    there a shortfall is an error rather than a wait that never ends."""
    tp = teacher.tensor_parallel
    extra = dict(resources or {})
    if not teacher.gpu_memory_gib:
        return [{"CPU": 1, **extra}]
    remote = bool(os.environ.get("RAY_ADDRESS")) if remote is None else remote
    if gpus < tp and not remote:
        raise ValueError(f"teacher '{teacher.id}' needs {tp} GPU(s) (tensor_parallel_size={tp}) and this local Ray "
                         f"head has {gpus:g}; run on a GPU machine or cluster (RAY_ADDRESS), or set "
                         f"teacher.{teacher.id}.gpu_memory_gib = 0 to run it on CPU")
    return [{"GPU": 1, "CPU": 1, **extra} for _ in range(tp)]


# Restarts of a crashed engine replica before its job fails. Ray Data restarts a map actor
# without end (max_restarts=-1) and retries its tasks without end: an engine that dies at its
# first batch (an attention shape the CPU backend lacks) restarted for 8.5 minutes until
# stopped by hand. Two restarts cover a transient death; a third death names its reason.
ENGINE_RESTARTS = 2


def bounded(processor, restarts: int = ENGINE_RESTARTS):
    """A Ray Data LLM processor whose vLLM stage restarts a dead engine at most `restarts`
    times, and retries a task on it as often, instead of forever."""
    stage = processor.get_stage_by_name("vLLMEngineStage")
    stage.map_batches_kwargs.update(max_restarts=restarts, max_task_retries=restarts)
    return processor


def engine_failure(error: BaseException, what: str, since: float) -> RuntimeError:
    """One line for a job whose engine kept dying: what died, how often it was restarted,
    and the engine's own reason, read from the worker logs of this machine's Ray session
    (on a remote cluster: `ray logs`)."""
    from distill.entry import one_line

    reason = engine_reason(since)
    return RuntimeError(f"{what}: its vLLM engine died {ENGINE_RESTARTS + 1} times and was not restarted again; "
                        + (f"the engine's reason: {reason}" if reason else
                           f"Ray says: {one_line(error)} (the engine's own log is in the Ray worker logs)"))


_ENGINE_ERROR = re.compile(r"ERROR .*?\] ((?:\w+\.)*\w*(?:Error|Exception)): (.+)$")


def engine_reason(since: float = 0.0) -> str | None:
    """The first error an engine logged (its root cause, not the EngineDeadError that
    follows it) in the worker logs of this machine's Ray session, written after `since`."""
    import ray

    try:
        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    except AttributeError:  # not started from this process (a remote cluster)
        return None
    found = []
    for f in logs.glob("worker-*.out"):
        try:
            if f.stat().st_mtime < since:
                continue
            for line in f.read_text(errors="replace").splitlines():
                m = _ENGINE_ERROR.search(line)
                if m and "EngineDeadError" not in m.group(1):
                    found.append((f.stat().st_mtime, f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"))
                    break
        except OSError:
            continue
    return redact(min(found)[1])[:500] if found else None


def engine_processor_config(teacher, model_path: str, engine_kwargs: dict, batch_size: int, kv_cache_gib: int | None,
                            gpus: float, replicas: int = 1, resources: dict | None = None,
                            replica_wait_s: int = 0, **extra):
    """Ray Data LLM settings shared by every batch job over one teacher engine.

    Rows arrive already formatted or tokenized, so the chat-template, tokenize and
    detokenize stages (one actor each) are off; one tqdm bar per job replaces Ray Data's
    per-operator progress log. With replica_wait_s > 0 no row is sent until every replica
    is up (else the first engine up takes the whole queue of a short job), and a cluster
    that cannot place them all within that time fails instead of running on fewer."""
    import ray
    from ray.data.llm import vLLMEngineProcessorConfig

    from teacher import engine

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.wait_for_min_actors_s = replica_wait_s if replica_wait_s > 0 else -1
    return vLLMEngineProcessorConfig(
        model_source=model_path,
        engine_kwargs=engine_kwargs,
        batch_size=batch_size,
        # (n, n): a fixed pool of n engines. A bare n is an autoscaling pool of 1..n, which a
        # short job never grows past its first engine.
        concurrency=(replicas, replicas),
        placement_group_config={"bundles": engine_bundles(teacher, gpus, resources=resources)},
        runtime_env={"env_vars": engine.cpu_env(kv_cache_gib, gpus)},
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        **extra,
    )
