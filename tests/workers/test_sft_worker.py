"""SFTWorker's training loop in-process on CPU: one host sync per call, and a non-finite loss still
fails the run, naming its step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlinf_embodied.algorithms.checks import NonFiniteError
from rlinf_embodied.config import SFTRunConfig
from rlinf_embodied.datasets import LeRobotDatasetWriter
from rlinf_embodied.workers.sft_worker import SFTWorker

STATE_DIM, ACTION_DIM = 6, 3


def make_worker(tmp_path, **sft) -> SFTWorker:
    writer = LeRobotDatasetWriter(
        str(tmp_path / "ds"), fps=20, state_dim=STATE_DIM, action_dim=ACTION_DIM, camera_shapes={}
    )
    rng = np.random.default_rng(0)
    for episode in range(3):
        states = rng.normal(size=(12, STATE_DIM)).astype(np.float32)
        actions = np.tanh(states[:, :ACTION_DIM]).astype(np.float32)
        writer.add_episode("reach", states, actions, {}, np.zeros(12, np.float32), True, episode)
    cfg = SFTRunConfig()
    cfg.policy.name = "mlp"
    cfg.sft.dataset, cfg.sft.batch_size, cfg.sft.warmup_steps = str(tmp_path / "ds"), 8, 0
    for key, value in sft.items():
        setattr(cfg.sft, key, value)
    worker = SFTWorker(cfg)
    worker.init_worker()
    return worker


def test_train_steps_reports_the_mean_of_its_steps(tmp_path, monkeypatch):
    worker = make_worker(tmp_path, lr=1e-3)
    assert worker.dataset.device == torch.device("cpu")  # data_on_device: the worker's device
    seen = []
    original = worker.policy.sft_loss

    def recording(*args, **kwargs):
        loss = original(*args, **kwargs)
        seen.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(worker.policy, "sft_loss", recording)
    metrics = worker.train_steps(0, 5)
    assert len(seen) == 5 and math.isclose(metrics["sft/loss"], float(np.mean(seen)), rel_tol=1e-5)
    assert metrics["time/step"] > 0 and metrics["sft/grad_norm"] > 0


def test_a_non_finite_loss_fails_the_run_naming_its_step(tmp_path, monkeypatch):
    worker = make_worker(tmp_path)
    calls = []
    original = worker.policy.sft_loss

    def nan_on_third(*args, **kwargs):
        loss = original(*args, **kwargs)
        calls.append(1)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(worker.policy, "sft_loss", nan_on_third)
    with pytest.raises(NonFiniteError, match="'sft/loss' at iteration 12"):
        worker.train_steps(10, 5)


def make_image_worker(tmp_path, image_probe_interval: int | None = 1) -> SFTWorker:
    writer = LeRobotDatasetWriter(
        str(tmp_path / "ds"), fps=20, state_dim=STATE_DIM, action_dim=ACTION_DIM, camera_shapes={"rgb": (16, 16, 3)}
    )
    rng = np.random.default_rng(0)
    for episode in range(2):
        states = rng.normal(size=(10, STATE_DIM)).astype(np.float32)
        images = rng.integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)
        actions = np.tanh(states[:, :ACTION_DIM]).astype(np.float32)
        writer.add_episode("reach", states, actions, {"rgb": images}, np.zeros(10, np.float32), True, episode)
    cfg = SFTRunConfig()
    cfg.policy.name, cfg.policy.size, cfg.policy.precision = "pi0", "tiny", "float32"
    cfg.sft.dataset, cfg.sft.batch_size, cfg.sft.warmup_steps = str(tmp_path / "ds"), 4, 0
    cfg.sft.image_probe_interval = image_probe_interval
    worker = SFTWorker(cfg)
    worker.init_worker()
    return worker


@pytest.mark.parametrize("interval, probed_calls", [(None, [False, True]), (3, [True, True]), (0, [False, False])])
def test_the_image_probe_runs_every_interval_steps(tmp_path, interval, probed_calls):
    """Default: every 100 steps (a call ending at or past a multiple of it probes); 0 turns it off."""
    worker = make_image_worker(tmp_path, interval)
    calls = [worker.train_steps(0, 4), worker.train_steps(98, 4)]
    assert ["sft/probe_loss" in metrics for metrics in calls] == probed_calls


@pytest.mark.parametrize("identical_images", [True, False])
def test_the_image_probe_rolls_only_the_images(tmp_path, identical_images):
    """sft/probe_loss_shuffled_images differs from sft/probe_loss only through the cameras: with every frame
    showing the same image the two are equal (same batch, noise and flow times), otherwise they differ."""
    worker = make_image_worker(tmp_path)
    if identical_images:  # after loading: the dataset check rejects a camera that never changes
        frames = worker.dataset._images["rgb"]  # (frames, H, W, 3) uint8
        frames[:] = frames[0]
    metrics = worker.train_steps(0, 1)
    probe, shuffled = metrics["sft/probe_loss"], metrics["sft/probe_loss_shuffled_images"]
    assert math.isfinite(probe) and probe > 0
    assert (probe == shuffled) == identical_images


def test_offload_and_onload_keep_the_weights(tmp_path):
    """SFT offloads its actor around each evaluation; SFTWorker inherits ActorWorker.offload, which also
    offloads the ref_kl_coef reference (SFT has none: stop 21's GPU SFT died here at its first evaluation)."""
    worker = make_worker(tmp_path)
    worker.train_steps(0, 1)
    assert any(p.grad is not None for p in worker.policy.parameters())
    before = {name: value.clone() for name, value in worker.policy.state_dict().items()}
    worker.offload()
    assert all(p.grad is None for p in worker.policy.parameters())  # stale gradients are dropped, not moved
    worker.onload()
    after = worker.policy.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert worker.train_steps(1, 1)["sft/loss"] > 0


def test_frozen_by_config_names_the_switches_a_checkpoint_carries(tmp_path):
    """A pi0 checkpoint saved by RL with frozen towers carries the switches into SFT continued from it;
    init_worker reports them (and trained vs total parameters) so the SFT log can say so."""
    from rlinf_embodied.policies import load_policy, make_policy
    from rlinf_embodied.workers.sft_worker import frozen_by_config

    policy = make_policy("pi0", size="tiny", action_dim=ACTION_DIM, freeze_vision_encoder=True)
    policy.save_pretrained(str(tmp_path / "rl_ckpt"))
    reloaded = load_policy(str(tmp_path / "rl_ckpt"))
    assert frozen_by_config(reloaded.config) == ["freeze_vision_encoder"]
    assert frozen_by_config(load_policy(str(tmp_path / "rl_ckpt"), freeze_vision_encoder=False).config) == []
    info = make_worker(tmp_path).init_worker()
    assert info["frozen_by_config"] == [] and info["trainable_parameters"] == info["total_parameters"] > 0
