"""The free-space check before a checkpoint is written."""

from __future__ import annotations

import os
from collections import namedtuple

import pytest
import torch

from rlinf_embodied.config import TrainConfig
from rlinf_embodied.workers import disk_space
from rlinf_embodied.workers.disk_space import check_free_space, existing_ancestor, state_nbytes

Usage = namedtuple("Usage", "total used free")


def fake_free(monkeypatch, free_bytes: int) -> None:
    monkeypatch.setattr(disk_space.shutil, "disk_usage", lambda path: Usage(10 * free_bytes, 0, free_bytes))


def test_state_nbytes_counts_nested_tensors_in_their_dtypes():
    state = {"w": torch.zeros(10, 3), "opt": {"step": 3, "exp_avg": [torch.zeros(4, dtype=torch.bfloat16)]}}
    assert state_nbytes(state) == 10 * 3 * 4 + 4 * 2


def test_existing_ancestor_walks_up_to_a_directory_that_exists(tmp_path):
    assert existing_ancestor(str(tmp_path / "checkpoints" / "iteration_000001")) == str(tmp_path)
    assert existing_ancestor(str(tmp_path)) == str(tmp_path)


def test_too_little_space_names_the_directory_and_both_sizes(tmp_path, monkeypatch):
    fake_free(monkeypatch, 2 * 1024**3)
    target = str(tmp_path / "ckpt")
    with pytest.raises(OSError, match=r"ckpt'? needs about 5\.0 GiB, but its disk has 2\.0 GiB free"):
        check_free_space(target, 5 * 1024**3, "a checkpoint")
    check_free_space(target, 1024**3, "a checkpoint")  # fits: no error


def test_actor_refuses_to_start_a_checkpoint_the_disk_cannot_hold(tmp_path, monkeypatch):
    from rlinf_embodied.workers.actor_worker import ActorWorker

    actor = ActorWorker(TrainConfig(), action_dim=7, state_dim=8)
    actor.init_worker()
    fake_free(monkeypatch, 1024)  # 1 KiB free: less than the mlp's weights
    directory = tmp_path / "checkpoints" / "iteration_000000"
    with pytest.raises(OSError, match="needs about .* GiB, but its disk has 0.0 GiB free"):
        actor.save_checkpoint(str(directory), iteration=0, env_steps=0)
    assert not os.path.exists(directory)  # nothing half-written
    monkeypatch.undo()
    actor.save_checkpoint(str(directory), iteration=0, env_steps=0)
    assert (directory / "actor.pt").is_file() and (directory / "policy").is_dir()
