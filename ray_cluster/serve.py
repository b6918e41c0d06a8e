"""Serve teachers behind one OpenAI-compatible endpoint (Ray Serve LLM + vLLM).

    python -m ray_cluster.serve                               # what `make serve` runs
    python -m ray_cluster.serve --teacher smollm2-135m --port 8100

Each teacher is a model id on the same endpoint (`/v1/models` lists them). The process
prints `ready <url>` once every teacher answered a completion, and on Ctrl-C or SIGTERM
shuts Serve and the local Ray head it started down, leaving no process behind; on a cluster
(RAY_ADDRESS) it deletes only its own application. Binds to 127.0.0.1 unless --host says
otherwise. The LLM judge is served the same way, as the application `judge` under /judge
(eval/endpoint.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from teacher import engine
from teacher.registry import get_teacher

# The two small embedded teachers: all four embedded models would need ~6 min and ~16 GB to start on 2 cores.
SERVED_BY_DEFAULT = ["smollm2-135m", "gemma3-270m"]


def llm_config(teacher_id: str, top_k: int, max_model_len: int, kv_cache_gib: int | None, gpus: float):
    from ray.serve.llm import LLMConfig

    from ray_cluster.cluster import engine_bundles

    teacher = get_teacher(teacher_id)
    env = engine.cpu_env(kv_cache_gib, gpus)
    if teacher.source != "hub":
        # Ray Serve LLM copies HF_TOKEN from its replica's environment into its engine's
        # runtime_env, and Ray writes a runtime_env in plain text to runtime_env_agent.log
        # (found by tests/distill/test_pipeline_e2e.py). A model on local disk needs no token:
        # its replica runs without one. (huggingface_hub reads an empty HF_TOKEN as none.)
        env.update({"HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": ""})
    return LLMConfig(
        model_loading_config={"model_id": teacher.id, "model_source": teacher.model_path()},
        engine_kwargs=engine.engine_kwargs(teacher, top_k, max_model_len, model_path=teacher.model_path()),
        placement_group_config={"bundles": engine_bundles(teacher, gpus)},
        runtime_env={"env_vars": env},
        deployment_config={"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
    )


APP = "teachers"
# An engine's limits unless the caller says otherwise (the judge passes judge.server_max_model_len).
TOP_K, MAX_MODEL_LEN = 20, 2048


def route(app: str) -> str:
    """The teachers at the root (/v1), any other application under its name (/judge/v1), so
    that both can run on one cluster's Serve."""
    return "/" if app == APP else f"/{app}"


def start(teacher_ids: list[str], host: str = "127.0.0.1", port: int = 8000, top_k: int = TOP_K,
          max_model_len: int = MAX_MODEL_LEN, kv_cache_gib: int | None = None, app: str = APP) -> str:
    from ray import serve
    from ray.serve.llm import build_openai_app

    from ray_cluster.cluster import connect

    configs = [get_teacher(t) for t in teacher_ids]  # fail on unknown ids before starting anything
    for t in configs:
        t.model_path()
    cluster = connect()
    serve.start(http_options={"host": host, "port": port})
    built = build_openai_app({"llm_configs": [llm_config(t.id, top_k, max_model_len, kv_cache_gib, cluster["gpus"])
                                              for t in configs]})
    serve.run(built, name=app, route_prefix=route(app), blocking=False)
    return f"{proxy_url(host, port)}{route(app).rstrip('/')}/v1"


def proxy_url(host: str, port: int) -> str:
    """Where Serve's HTTP proxy answers: on a cluster whose Serve was already running, its own
    host and port, not the ones asked for (serve.start keeps the running proxy's)."""
    try:
        from ray.serve.context import _get_global_client

        http = _get_global_client().http_config
        host, port = http.host, http.port
    except Exception:  # a Ray without this internal: the options asked for are the ones in use
        pass
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def wait_ready(base_url: str, teacher_ids: list[str], timeout_s: float = 600) -> float:
    """Block until every teacher lists and answers; returns the seconds it took."""
    from teacher.client import make_client

    client = make_client(base_url, timeout=60, max_retries=0)
    t0 = time.perf_counter()
    pending = list(teacher_ids)
    last = ""
    while pending and time.perf_counter() - t0 < timeout_s:
        try:
            listed = {m.id for m in client.models.list().data}
            for t in [t for t in pending if t in listed]:
                client.completions.create(model=t, prompt="Once upon a time", max_tokens=1)
                pending.remove(t)
        except Exception as e:  # not up yet: connection refused, 404, 503 while replicas start
            last = f"{type(e).__name__}: {e}"
        if pending:
            time.sleep(2)
    if pending:
        raise TimeoutError(f"teachers {pending} not ready at {base_url} after {timeout_s:.0f} s ({last})")
    return time.perf_counter() - t0


def stop(app: str = APP, keep_head: bool = False) -> None:
    """On a cluster, delete this application only (other users' stay up); on the local head
    this process started, shut Serve down, and the head too unless keep_head (the pipeline's
    head, which it shuts down itself)."""
    from ray import serve

    from ray_cluster.cluster import shutdown

    if os.environ.get("RAY_ADDRESS"):
        serve.delete(app)
        return
    serve.shutdown()
    if not keep_head:
        shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="serve teachers on an OpenAI-compatible endpoint")
    ap.add_argument("--teacher", action="append", help="teacher id (repeatable); default: SmolLM2 and Gemma")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--top-k", type=int, default=TOP_K, help="most logprobs a request may ask for")
    ap.add_argument("--max-model-len", type=int, default=MAX_MODEL_LEN, help="longest prompt + reply an engine takes")
    ap.add_argument("--kv-cache-gib", type=int, default=None,
                    help="KV cache per CPU engine (default: VLLM_CPU_KVCACHE_SPACE, else 2; ignored on GPUs)")
    ap.add_argument("--app", default=APP, help="Serve application name; other than 'teachers', served under /<app>")
    ap.add_argument("--ready-timeout", type=float, default=600)
    args = ap.parse_args(argv)
    teachers = args.teacher or SERVED_BY_DEFAULT
    done = threading.Event()
    try:
        url = start(teachers, args.host, args.port, args.top_k, args.max_model_len, args.kv_cache_gib, args.app)
        # After ray.init, which installs its own SIGTERM handler that exits without cleanup.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        took = wait_ready(url, teachers, args.ready_timeout)
        print(f"ready {url} models={','.join(teachers)} after {took:.0f} s", flush=True)
        done.wait()
    except (ValueError, FileNotFoundError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        stop(args.app)
    return 0


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m ray_cluster.serve")())
