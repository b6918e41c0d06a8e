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
    def finish(model, tok, result):  # runs in the rank-0 worker
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
