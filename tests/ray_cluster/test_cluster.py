"""Attaching to Ray: a run without RAY_ADDRESS starts its own local head, whatever an
earlier `ray start` on the machine left behind."""

import os
import subprocess
import sys
import tempfile

from ray_cluster.cluster import LOCAL_LOGICAL_CPUS
from tests.conftest import ROOT


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
