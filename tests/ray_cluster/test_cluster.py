"""Attaching to Ray: a run without RAY_ADDRESS starts its own local head, whatever an
earlier `ray start` on the machine left behind, with token auth on and what Ray lets us
bind on loopback."""

import os
import signal
import subprocess
import sys
import tempfile

from ray_cluster.cluster import LOCAL_LOGICAL_CPUS
from tests.conftest import ROOT
from tests.listeners import assert_ray_head_guarded, listeners


def test_stale_current_cluster_file_is_not_joined():
    # A dead address in the file Ray's address-less init reads (a `ray start` head that was
    # killed leaves it behind); CI once failed 17 tests on exactly this.
    with tempfile.TemporaryDirectory(prefix="kdray-", dir="/tmp") as tmp:  # short: socket paths
        os.makedirs(os.path.join(tmp, "ray"))
        with open(os.path.join(tmp, "ray", "ray_current_cluster"), "w") as f:
            f.write("127.0.0.1:1")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": tmp}
        code = ("from ray_cluster import cluster; info = cluster.connect(); cluster.shutdown(); "
                "print(info['address'], info['cpus'])")
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    address, cpus = proc.stdout.split()[-2:]
    assert address == "local" and float(cpus) >= LOCAL_LOGICAL_CPUS


def _local_head(env: dict) -> subprocess.Popen:
    """The pipeline's own head (cluster.connect() without RAY_ADDRESS), held up until stdin closes."""
    code = ("import sys; from ray_cluster import cluster; cluster.connect(); "
            "print('UP', cluster.token_auth_on(), flush=True); sys.stdin.read(); cluster.shutdown()")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _stop(proc: subprocess.Popen) -> str:
    proc.stdin.close()
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.stderr.read()


def test_local_head_keeps_ray_on_loopback_where_it_can_and_token_auth_on():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    proc = _local_head(env)
    try:
        line = proc.stdout.readline()
        assert line.split() == ["UP", "True"], f"head did not come up with token auth ({line!r})"
        assert_ray_head_guarded(listeners(proc.pid))
    finally:
        err = _stop(proc)
    assert "token auth is off" not in err


def test_local_head_without_token_auth_says_what_is_open():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    proc = _local_head(env)
    try:
        assert proc.stdout.readline().split() == ["UP", "False"]
    finally:
        err = _stop(proc)
    assert "Ray token auth is off (RAY_AUTH_MODE=disabled)" in err and "every interface" in err


def test_an_engine_start_runs_from_its_jobs_first_pull_to_the_earliest_request_it_began():
    import math
    import time

    from ray_cluster.cluster import EngineStarts, request_started

    starts = EngineStarts()

    def job():  # rows arrive in completion order, not in the order the engine began them
        t = time.time()
        yield {"started": t + 5.0}
        yield {"started": t + 2.0}
        yield {"started": math.inf}  # a row the engine failed on

    assert len(list(starts.timed(job(), engines=2))) == 3
    assert starts.count == 2 and 1.9 < starts.seconds < 2.1
    assert list(starts.timed(iter([{"task": 1}]))) == [{"task": 1}]  # a fake engine's rows carry no time
    assert starts.figures() == {"engine_starts": 3, "engine_start_s": round(starts.seconds, 1)}
    assert request_started({"time_taken_llm": -1}) == math.inf == request_started({})
    assert abs(request_started({"time_taken_llm": 30.0}) - (time.time() - 30.0)) < 5


RELEASE = """
import threading, ray
from ray_cluster import cluster
cluster.connect()
pg = lambda name='': ray.util.placement_group([{'CPU': 1}], name=name)
def live():
    return sorted(v['name'] or 'unnamed' for v in ray.util.placement_group_table().values() if v['state'] != 'REMOVED')
before = pg()                                     # made before any batch job: not ours to remove
inside, started = threading.Event(), threading.Event()
def teacher_b():                                  # a second teacher generating side by side
    with cluster.releasing_engines():
        pg(); started.set(); inside.wait()
with cluster.releasing_engines():
    pg(); pg('SERVE_REPLICA::judge')              # an engine replica's group; Serve's judge beside it
    t = threading.Thread(target=teacher_b); t.start(); started.wait()
print('A_DONE', live(), flush=True)               # B still running: nothing removed yet
inside.set(); t.join()
print('ALL_DONE', live(), cluster.groups_removed, cluster.engine_groups_held(), flush=True)
cluster.shutdown()
"""


def test_engine_placement_groups_are_removed_when_the_last_batch_job_ends():
    """Ray Data LLM reserves a placement group per engine replica when vLLM runs on Ray's
    executor (tensor-parallel teachers) and never removes it: in real Ray, the groups made
    during batch jobs go when the last job running ends, and Serve's (named) and those made
    before stay. (vLLM on the CPU has no Ray executor, so no engine here makes one.)"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", RELEASE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln.startswith(("A_DONE", "ALL_DONE"))}
    assert lines["A_DONE"] == "A_DONE ['SERVE_REPLICA::judge', 'unnamed', 'unnamed', 'unnamed']"
    assert lines["ALL_DONE"] == "ALL_DONE ['SERVE_REPLICA::judge', 'unnamed'] 2 1"
