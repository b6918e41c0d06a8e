"""The test session's Ray head, started as a user starts one: `make ray-up` (token auth on,
dashboard on loopback), held in the foreground (--block) in a temp dir of its own, so that
stopping it (a signal to its session) touches no other Ray on the machine (never `ray stop`,
which stops every Ray on it). Jobs are submitted to it with `ray job submit`."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import make_env
from tests.listeners import stop_session

BIN = Path(sys.executable).parent


# HF_TOKEN of the session's head: what files written by Ray, a job or a run must never hold.
# Made here, not written: this file travels in the jobs' working_dir package.
SECRET = "hf_" + secrets.token_hex(16)


def files_holding(root: Path, needle: str) -> list[str]:
    """The files under root that hold needle (sockets and files gone meanwhile are passed over)."""
    found = []
    for p in Path(root).rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and needle.encode() in p.read_bytes():
                found.append(str(p.relative_to(root)))
        except OSError:
            pass
    return found


@dataclass(frozen=True)
class Head:
    dashboard: str  # the address `ray job submit --address` takes
    dash_port: int
    address: str  # the GCS's, as RAY_ADDRESS gives it to a driver on this machine
    proc: subprocess.Popen  # `make ray-up`, leading its own session
    env: dict  # what a user's shell has after `make ray-up`: the venv first, token auth on
    temp: str  # the head's --temp-dir: its session's logs and files

    def submit(self, working_dir: Path, env_vars: dict, *entrypoint: str, timeout: float = 1200):
        """`ray job submit --working-dir ... -- <entrypoint>`, waiting for the job to end.
        A head whose dashboard answers may not have its job agent yet (Ray refuses with "No
        available agent to submit job, please try again later", seen on 2 busy cores): the
        submission is tried again, as Ray says, for up to two minutes; nothing ran meanwhile."""
        import json

        deadline = time.monotonic() + 120
        while True:
            proc = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", self.dashboard,
                                   "--working-dir", str(working_dir), "--runtime-env-json",
                                   json.dumps({"env_vars": env_vars}), "--", *entrypoint],
                                  env=self.env, capture_output=True, text=True, timeout=timeout)
            if "No available agent to submit job" not in proc.stderr + proc.stdout or time.monotonic() > deadline:
                return proc
            time.sleep(5)


def wait_for_dashboard(url: str, proc, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/api/version", timeout=5)
            return
        except urllib.error.HTTPError:  # it answered (with token auth on, 401): it is up
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the Ray head's dashboard {url} did not answer in {timeout_s:.0f} s")


@contextmanager
def make_ray_up(root: Path, log_dir: Path):
    """`make ray-up` on free ports; its prerequisites are taken as done (-o): starting a head
    must not install or convert."""
    from tests.ray_cluster.test_serve import free_ports

    # Every port of its own: another test's Ray (a pipeline's head, the served teachers) may be
    # up beside this one, under the second xdist worker, and holds Ray's default agent ports;
    # a head whose job agent cannot bind 52365 refuses jobs ("No available agent").
    port, dash, agent, agent_grpc, metrics, runtime_env = free_ports(6)
    agent_flags = (f"--dashboard-agent-listen-port {agent} --dashboard-agent-grpc-port {agent_grpc} "
                   f"--metrics-export-port {metrics} --runtime-env-agent-port {runtime_env}")
    temp = tempfile.mkdtemp(prefix="kdray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    # The user's secret, exported before `make ray-up` as the README says: the head's processes,
    # its jobs and their tasks inherit it, and no file may hold it (SECRET).
    env = {**{k: v for k, v in make_env().items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}, "HF_TOKEN": SECRET}
    log = open(log_dir / "ray-up.log", "w")
    proc = subprocess.Popen(["make", "-o", "setup", "-o", "models", "ray-up", f"RAY_PORT={port}", f"DASH_PORT={dash}",
                             f"RAY_START_FLAGS=--block --temp-dir {temp} {agent_flags}"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_dashboard(f"http://127.0.0.1:{dash}", proc, log_dir / "ray-up.log")
        user = {**env, "PATH": f"{BIN}:{env['PATH']}", "RAY_AUTH_MODE": "token"}
        yield Head(f"http://127.0.0.1:{dash}", dash, f"127.0.0.1:{port}", proc, user, temp)
    finally:
        stop_session(proc)  # --block: the head stops its own processes on SIGTERM
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
