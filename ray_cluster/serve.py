"""Serve teachers behind one OpenAI-compatible endpoint (Ray Serve LLM + vLLM).

    python -m ray_cluster.serve                               # what `make serve` runs
    python -m ray_cluster.serve --teacher smollm2-135m --port 8100

Each teacher is a model id on the same endpoint (`/v1/models` lists them). The process
prints `ready <url>` once every teacher answered a completion, and on Ctrl-C or SIGTERM
shuts Serve and (if it started it) the local Ray head down, leaving no process behind.
Binds to 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from teacher import engine
from teacher.registry import get_teacher

# The two small embedded teachers: all four embedded models would need ~6 min and ~16 GB to start on 2 cores.
SERVED_BY_DEFAULT = ["smollm2-135m", "gemma3-270m"]


def llm_config(teacher_id: str, top_k: int, max_model_len: int, kv_cache_gib: int, gpus: float):
    from ray.serve.llm import LLMConfig

    from ray_cluster.cluster import engine_bundles

    teacher = get_teacher(teacher_id)
    return LLMConfig(
        model_loading_config={"model_id": teacher.id, "model_source": teacher.model_path()},
        engine_kwargs=engine.engine_kwargs(teacher, top_k, max_model_len),
        placement_group_config={"bundles": engine_bundles(teacher, gpus)},
        runtime_env={"env_vars": engine.cpu_env(kv_cache_gib)},
        deployment_config={"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
    )


def start(teacher_ids: list[str], host: str = "127.0.0.1", port: int = 8000, top_k: int = 20,
          max_model_len: int = 2048, kv_cache_gib: int = 2) -> str:
    from ray import serve
    from ray.serve.llm import build_openai_app

    from ray_cluster.cluster import connect

    configs = [get_teacher(t) for t in teacher_ids]  # fail on unknown ids before starting anything
    for t in configs:
        t.model_path()
    cluster = connect()
    serve.start(http_options={"host": host, "port": port})
    app = build_openai_app({"llm_configs": [llm_config(t.id, top_k, max_model_len, kv_cache_gib, cluster["gpus"])
                                            for t in configs]})
    serve.run(app, name="teachers", blocking=False)
    return f"http://{host}:{port}/v1"


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


def stop() -> None:
    from ray import serve

    from ray_cluster.cluster import shutdown

    serve.shutdown()
    shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="serve teachers on an OpenAI-compatible endpoint")
    ap.add_argument("--teacher", action="append", help="teacher id (repeatable); default: SmolLM2 and Gemma")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--top-k", type=int, default=20, help="most logprobs a request may ask for")
    ap.add_argument("--ready-timeout", type=float, default=600)
    args = ap.parse_args(argv)
    teachers = args.teacher or SERVED_BY_DEFAULT
    done = threading.Event()
    try:
        url = start(teachers, args.host, args.port, args.top_k)
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
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
