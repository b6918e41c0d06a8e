"""Student training through Ray Train: a TorchTrainer of two DDP workers (gloo on CPU)
against one process with their combined batch, on a tiny model and synthetic teacher rows of
unequal length, each worker accumulating two micro-batches a step."""

import dataclasses
from pathlib import Path

import pytest
import torch

from distill import train as T
from tests.distill.test_train import Tok, lora_weights, teacher_rows, tiny_student


def save_adapter(path):
    def finish(model, tok, result, folder):  # runs in the rank-0 worker
        from safetensors.torch import save_file

        save_file(lora_weights(model), str(path))
        result["adapter_file"] = str(path)
    return finish


@pytest.mark.e2e
def test_two_ddp_workers_take_the_steps_of_one_process_with_their_combined_batch(tmp_path, monkeypatch):
    """...with the student's folder given relative, as the default run folder (runs/<name>) is:
    Ray Train runs each worker in a folder of its own."""
    from safetensors.torch import load_file

    from distill.train_ray import train_on_ray
    from ray_cluster.cluster import connect, shutdown

    # Rows of unequal length, and each worker's step split in two micro-batches: the loss is a
    # mean over every KD position of the step, across micro-batches and ranks alike.
    rows = teacher_rows(n=8, lengths=[3, 9, 5, 12, 4, 7, 10, 6])
    one = T.TrainConfig(steps=4, batch_size=8, lr=1e-2, warmup_steps=0, save_steps=100, logging_steps=1,
                        max_len=32, precision="fp32")
    single_model = tiny_student()
    single = T.train(single_model, Tok(), rows, tmp_path / "one", one)
    two = dataclasses.replace(one, batch_size=2, grad_accum=2, workers=2)
    try:
        connect()  # the head and its workers import this checkout's tests (the student builder)
        monkeypatch.chdir(tmp_path)
        ddp = train_on_ray(lambda: (tiny_student(), Tok()), rows, Path("two"), two,
                           finish=save_adapter(tmp_path / "two-adapter.safetensors"))
    finally:
        shutdown()
    assert (single["workers"], ddp["workers"]) == (1, 2)
    assert ddp["effective_batch"] == 2 * 2 * 2 == single["effective_batch"]
    assert ddp["steps"] == single["steps"] == 4
    losses = [h["loss"] for h in ddp["history"]]
    assert losses[-1] < losses[0]
    # Logged losses: rank 0's half-batch against the whole batch, so only close; the
    # adapters must agree to float32 rounding over four steps of averaged gradients.
    assert losses == pytest.approx([h["loss"] for h in single["history"]], rel=0.05)
    got, want = load_file(ddp["adapter_file"]), lora_weights(single_model)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-5, rtol=1e-4, msg=name)


def test_workers_must_be_positive_and_exclude_on_policy():
    with pytest.raises(ValueError, match="workers: 0 must be >= 1"):
        T.TrainConfig(workers=0)
    with pytest.raises(ValueError, match="workers: 2 with on_policy > 0: on-policy steps run in one process"):
        T.TrainConfig(workers=2, on_policy=0.5)


# Runs as its own driver in a folder of the test's, the run folder given relative: trains the
# tiny student on two workers, one per worker node. With a hold file (argv[3]) the workers stop
# before their next forward once a checkpoint is in storage, until the test removes the file: the
# kill lands mid-training however fast or loaded the machine (a fixed sleep per forward once let a
# busy CI machine finish all 12 steps before the kill came).
DRIVER = r"""
import json, sys, time
from pathlib import Path
from safetensors.torch import save_file
from distill import train as T
from distill.train_ray import train_on_ray
from tests.distill.test_train import Tok, lora_weights, teacher_rows, tiny_student

STORAGE, HOLD = Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None

def held(*args):  # the math is unchanged; only when the next forward runs
    while HOLD is not None and HOLD.exists() and any(STORAGE.glob("*/checkpoint_*/checkpoint/trainer_state.json")):
        time.sleep(0.2)

def slow_student():
    model = tiny_student()
    model.register_forward_pre_hook(held)
    return model, Tok()

def finish(model, tok, result, folder):
    folder.mkdir(parents=True)
    save_file(lora_weights(model), str(folder / "adapter.safetensors"))
    result["adapter_file"] = str(folder / "adapter.safetensors")

cfg = T.TrainConfig(steps=12, batch_size=2, grad_accum=2, workers=2, lr=1e-2, warmup_steps=0, save_steps=3,
                    logging_steps=1, max_len=32, precision="fp32", shuffle_buffer=4, keep_checkpoints=0,
                    storage_path=sys.argv[2])
rows = teacher_rows(n=16, lengths=[3, 9, 5, 12, 4, 7, 10, 6, 8, 3, 11, 5, 9, 4, 6, 7])
if sys.argv[2] == "":
    try:  # the default storage, the run folder, is on this machine's disk only
        train_on_ray(slow_student, rows, Path(sys.argv[1]), cfg, finish=finish)
    except ValueError as e:
        print("REFUSED " + str(e))
    sys.exit(0)
result = train_on_ray(slow_student, rows, Path(sys.argv[1]), cfg, finish=finish,
                      resources_per_worker={"CPU": 1, "kd_test_engine": 1})
print("RESULT " + json.dumps(result))
"""

WORKERS = r"""
import json, ray
from ray.util.state import list_actors
ray.init(log_to_driver=False)
print("WORKERS " + json.dumps([a.pid for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
                               if "RayTrainWorker" in (a.class_name or "")]))
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_a_worker_killed_mid_training_resumes_from_the_last_checkpoint_on_two_nodes(tmp_path):
    """Two training workers on two nodes, the run folder relative; one worker is killed after
    a checkpoint: Ray Train restarts the group from it, and the result is the uninterrupted
    run's, step for step (every step's rows differ: 16 rows, 8 a step)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from tests.conftest import ROOT
    from tests.ray_cluster.test_multinode import Cluster

    c = Cluster(tmp_path)
    c.env["PYTHONPATH"] = str(ROOT)  # the nodes' workers import the tests' student builder
    try:
        c.start_nodes()
        env = {**c.env, "RAY_ADDRESS": f"127.0.0.1:{c.port}"}

        def run(folder: str, log: str, storage: str | None = None, *hold: Path):
            storage = str(tmp_path / folder / "storage") if storage is None else storage  # every node sees it
            return subprocess.Popen([sys.executable, "-c", DRIVER, folder, storage, *map(str, hold)], cwd=tmp_path,
                                    env=env, stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT)

        def result(proc, log: str) -> dict:
            assert proc.wait(timeout=600) == 0, (tmp_path / log).read_text()[-3000:]
            line = [l for l in (tmp_path / log).read_text().splitlines() if l.startswith("RESULT ")][-1]
            return json.loads(line[len("RESULT "):])

        assert run("default", "default.log", storage="").wait(timeout=300) == 0
        assert ("REFUSED train.workers = 2 on a cluster of 3 nodes needs train.storage_path"
                in (tmp_path / "default.log").read_text())
        whole = result(run("whole", "whole.log"), "whole.log")
        hold = tmp_path / "hold"
        hold.touch()
        killed = run("killed", "killed.log", None, hold)
        storage = tmp_path / "killed" / "storage" / "train"
        deadline = time.monotonic() + 300
        while not list(storage.glob("checkpoint_*/checkpoint/trainer_state.json")):
            assert killed.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
            time.sleep(0.5)
        pids = json.loads([l for l in c.driver(WORKERS).stdout.splitlines() if l.startswith("WORKERS ")][-1][8:])
        assert len(pids) == 2, pids
        assert killed.poll() is None, "the held run ended before the kill"
        os.kill(pids[-1], signal.SIGKILL)
        hold.unlink()
        resumed = result(killed, "killed.log")
    finally:
        c.stop()
    assert resumed["resumed_from"] is not None and whole["resumed_from"] is None
    assert [h["step"] for h in resumed["history"]] == list(range(1, 13)) == [h["step"] for h in whole["history"]]
    # The export came back through Ray, into the relative run folder, and so did every checkpoint.
    assert Path(resumed["adapter_file"]) == tmp_path / "killed" / "adapter.safetensors"
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == [
        f"checkpoint-{s}" for s in (12, 3, 6, 9)]
    got, want = load_file(resumed["adapter_file"]), load_file(whole["adapter_file"])
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-5, rtol=1e-4, msg=name)
