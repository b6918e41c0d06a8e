"""Generation on a local multi-node Ray cluster, started by the test on 127.0.0.1: a head
and two worker nodes, each `ray start` with its own raylet and CPU resources, the way a
cluster of machines looks to Ray. Two engine replicas (generation.replicas = 2) run on the
two worker nodes, kept there by a custom resource only those nodes declare
(generation.engine_resources); one worker node is killed mid-job, then the driver; a rerun
on the surviving node ends with every prompt exactly once."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_models
from tests.listeners import ensure_ray_token, stop_sessions
from tests.ray_head import BIN, wait_for_dashboard
from tests.ray_cluster.test_serve import free_port, free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.slow, needs_models]

# What each worker node offers and each engine replica asks for: one engine per worker node.
ENGINE_SLOT = {"kd_test_engine": 1}

# Runs as its own driver: which engine replicas are alive, on which node (by its
# node-manager port, which the test chose per node), and their worker processes.
ENGINES = r"""
import json, sys
import ray
from ray.util.state import list_actors
ray.init(log_to_driver=False)
ports = {n["NodeID"]: n["NodeManagerPort"] for n in ray.nodes() if n["Alive"]}
alive = [{"port": ports.get(a.node_id), "pid": a.pid}
         for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
         if "vLLMEngineStageUDF" in (a.repr_name or "")]
print("ENGINES " + json.dumps(alive))
"""



class Cluster:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.temp = tempfile.mkdtemp(prefix="kdmn-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
        self.port, self.dash = free_ports(2)
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(PATH=f"{BIN}:{self.env['PATH']}", KD_MODELS_DIR=str(ROOT / "models"), RAY_AUTH_MODE="token")
        ensure_ray_token(self.env)
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, args: list[str]) -> None:
        self.ports[name] = free_port()
        log = open(self.tmp / f"ray-{name}.log", "w")
        self.procs[name] = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
             "--node-manager-port", str(self.ports[name]), *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def add_worker(self, name: str) -> None:
        # One at a time: two raylets starting together on one machine race for a socket name.
        self.start(name, ["--address", f"127.0.0.1:{self.port}", "--num-cpus", "1",
                          "--resources", json.dumps(ENGINE_SLOT)])
        self.wait_nodes(len([p for p in self.procs.values() if p.poll() is None]))

    def wait_nodes(self, n: int, timeout_s: float = 120) -> None:
        code = "import ray; ray.init(log_to_driver=False); print('NODES', sum(x['Alive'] for x in ray.nodes()))"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = self.driver(code, timeout=60).stdout
            if f"NODES {n}" in out:
                return
            time.sleep(2)
        raise TimeoutError(f"the cluster did not reach {n} live nodes")

    def driver(self, code: str, timeout: float = 120):
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**self.env, "RAY_ADDRESS": f"127.0.0.1:{self.port}"})

    def engines(self) -> list[dict]:
        """The live engine replicas: their node (by node-manager port) and the rows each has
        finished, from the batches the engine stage logs (nodes on one machine share the
        head's session log folder)."""
        out = self.driver(ENGINES).stdout
        engines = json.loads([l for l in out.splitlines() if l.startswith("ENGINES ")][-1][len("ENGINES "):])
        logs = Path(self.temp) / "session_latest" / "logs"
        for e in engines:
            text = "".join(p.read_text(errors="replace") for p in logs.glob(f"worker-*-{e['pid']}.*"))
            e["rows"] = sum(int(n) for n in re.findall(r"Elapsed time for batch \w+ with size (\d+)", text))
        return engines

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)  # the node's raylet and every worker on it
        self.procs[name].wait()

    def start_nodes(self) -> None:
        """The head, with one CPU (for the driver's Ray Data tasks) and no engine slot, then two
        worker nodes, each with one CPU and one engine slot."""
        self.start("head", ["--head", "--port", str(self.port), "--dashboard-port", str(self.dash), "--num-cpus", "1",
                            "--temp-dir", self.temp, "--dashboard-host", "127.0.0.1"])
        wait_for_dashboard(f"http://127.0.0.1:{self.dash}", self.procs["head"], self.tmp / "ray-head.log")
        self.add_worker("w1")
        self.add_worker("w2")

    def stop(self) -> None:
        stop_sessions(list(self.procs.values()))  # --block: each node stops its own processes
        subprocess.run(["rm", "-rf", self.temp])


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.start_nodes()
        yield c
    finally:
        c.stop()


def test_replicas_on_two_nodes_and_a_lost_node_costs_no_prompt(cluster, tmp_path):
    from distill.schema import read_rows

    out = tmp_path / "gen"
    cmd = [sys.executable, "-m", "ray_cluster.generate", "--teacher", "smollm2-135m", "--out", str(out),
           "--n-train", "28", "--n-eval", "4", "--max-new-tokens", "96", "--shard-size", "4", "--batch-size", "1",
           "--replicas", "2", "--engine-resources", json.dumps(ENGINE_SLOT)]
    env = {**cluster.env, "RAY_ADDRESS": f"127.0.0.1:{cluster.port}"}
    with open(tmp_path / "first-run.log", "w") as log:
        first = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=log)
    # Both replicas up, on the two worker nodes, and each has finished rows (kept over polls:
    # a poll that lands after the job has ended sees no live engine). No row is sent before
    # both are up (generation.replica_wait_s), so neither can take the whole queue. Rows are
    # long enough (96 tokens) that the job outlasts a few polls: with 24 tokens two in-process
    # engines finished all 32 rows between two polls and the test saw one node.
    deadline, seen = time.monotonic() + 600, []
    while time.monotonic() < deadline and first.poll() is None:
        seen += cluster.engines()
        if len({e["port"] for e in seen if e["rows"] > 0}) >= 2:
            break
        time.sleep(2)
    busy = {e["port"] for e in seen if e["rows"] > 0}
    assert busy == {cluster.ports["w1"], cluster.ports["w2"]}, f"rows did not come from two nodes: {seen}; {(tmp_path / 'first-run.log').read_text()[-2000:]}"
    # Lose a worker node that holds an engine, mid-job.
    victim = next(n for n in ("w1", "w2") if cluster.ports[n] in busy)
    assert first.poll() is None, "the job ended before a node could be lost mid-job"
    cluster.kill(victim)
    try:
        first.wait(timeout=15)  # it may fail on the lost node, or carry on with one engine
    except subprocess.TimeoutExpired:  # the driver is lost too: its work so far must not be
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    written = sorted(p.name for p in (out / "smollm2-135m").glob("*.parquet"))
    # The same job again on what is left, one engine slot: replicas are how a job runs, not
    # what it generates, so the rerun keeps the plan and generates only the missing shards.
    rerun = [*cmd[:cmd.index("--replicas")], "--replicas", "1", *cmd[cmd.index("--replicas") + 2:]]
    done = subprocess.run(rerun, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # The last JSON line: Ray's raylet may print a warning to the driver's stdout after it.
    stats = json.loads([l for l in done.stdout.splitlines() if l.startswith("{")][-1])
    assert stats["shards"] == 8 and stats["shards_done_before"] == len(written)
    rows = read_rows(out / "smollm2-135m")
    keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
    assert len(keys) == 32 == len(set(keys))
    assert not list((out / "smollm2-135m").glob(".*tmp"))
