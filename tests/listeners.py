"""What a server the project starts listens on, and whether its Ray head lets strangers in.

Ray 2.60 binds its GCS, raylets, workers and agents to every interface whatever the node
address; the README's "Security defaults" lists them and says token auth guards them. The
tests that start a Ray head check both halves: nothing else is exposed, and the GCS on the
machine's own network address refuses a client without the token.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time

import psutil

from tests.conftest import ROOT

# Ray's processes that listen beyond loopback (README, "Security defaults"): the GCS, the
# raylet, every worker and agent (ray::*), and Ray's python daemons (the driver's core
# worker, the dashboard's and autoscaler's metrics, the Ray client server).
RAY_EXPOSED = ("gcs_server", "raylet", "ray::", "python")


def ensure_ray_token(env: dict) -> None:
    """Make ~/.ray/auth_token if there is none, as `make ray-up` does: a `ray start` with
    RAY_AUTH_MODE=token refuses to start without it (a clean machine has none until the first
    local ray.init makes one)."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, capture_output=True, check=True, timeout=60)


def listeners(root_pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket listening in the process tree under root_pid."""
    root = psutil.Process(root_pid)
    procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in procs:
            try:
                found.add((procs[conn.pid].name(), conn.laddr.ip, conn.laddr.port))
            except psutil.NoSuchProcess:
                continue
    return sorted(found)


def stop_session(proc: subprocess.Popen, timeout_s: float = 16) -> None:
    stop_sessions([proc], timeout_s)


def stop_sessions(procs: list[subprocess.Popen], timeout_s: float = 16) -> None:
    """SIGTERM the sessions `procs` lead (each started with start_new_session), all at once, and
    wait until every process in them is gone, SIGKILL after timeout_s: a session's temp dir
    must not be removed under it. 16 s is `ray stop`'s own grace period. Measured on a `make
    ray-up --block` head: its raylet exits 13 s after SIGTERM, its GCS only after 32 s and the
    autoscaler after 34 s, which held every test session's end for half a minute; a 3-node
    cluster stopped node after node took 70 s."""
    deadline = time.monotonic() + timeout_s
    sig = signal.SIGTERM
    live = list(procs)
    while live:
        for proc in list(live):
            proc.poll()  # reap our own child, or its zombie keeps the group alive
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:  # the whole session is gone (or was before we began)
                live.remove(proc)
        sig = signal.SIGKILL if time.monotonic() > deadline else 0
        if live:
            time.sleep(0.5)


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def exposed(found: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return [row for row in found if not is_loopback(row[1])]


def machine_address() -> str:
    """An address of this machine other than loopback (how a stranger reaches it), else 127.0.0.1."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                return a.address
    return "127.0.0.1"


_ASK_GCS = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=30)
except AuthenticationError:
    print("REFUSED")
else:
    print("NODES", len(nodes))
"""


def ask_gcs(address: str, **env) -> str:
    """'REFUSED', or 'NODES <n>': what a client with `env` (RAY_AUTH_MODE, RAY_AUTH_TOKEN) gets
    from the GCS at `address`."""
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    proc = subprocess.run([sys.executable, "-c", _ASK_GCS, address], cwd=ROOT, env=base | env, capture_output=True,
                          text=True, timeout=120)
    lines = proc.stdout.split("\n")
    answer = next((line for line in lines if line.startswith(("REFUSED", "NODES"))), None)
    assert answer, f"the GCS probe failed (exit {proc.returncode}): {proc.stderr[-1500:]}"
    return answer


def assert_ray_head_guarded(found: list[tuple[str, str, int]]) -> None:
    """Every listener beyond loopback is one of Ray's (README), and the GCS, reached on the
    machine's network address, refuses a client without the token or with a wrong one and
    answers the owner of ~/.ray/auth_token."""
    assert exposed(found), f"expected Ray's GCS and raylet beyond loopback (README says so): {found}"
    strays = [row for row in exposed(found) if not row[0].startswith(RAY_EXPOSED)]
    assert not strays, f"listening beyond loopback and not in the README's list: {strays}"
    gcs = {port for name, _, port in found if name == "gcs_server"}
    assert len(gcs) == 1, found
    address = f"{machine_address()}:{gcs.pop()}"
    assert ask_gcs(address, RAY_AUTH_MODE="disabled") == "REFUSED", f"the GCS at {address} answers a client with no token"
    wrong = ask_gcs(address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-token-" + "0" * 20)
    assert wrong == "REFUSED", f"the GCS at {address} answers a wrong token"
    assert ask_gcs(address, RAY_AUTH_MODE="token").startswith("NODES "), f"the GCS at {address} refuses its own token"
