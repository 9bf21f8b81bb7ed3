"""resume_check: a checkpoint that cannot continue in this run says which settings differ, before loading."""

import re

import pytest
import torch

from rlinf_embodied.policies import make_policy
from rlinf_embodied.workers.resume_check import check_same_model, resumable_below


def save_checkpoint(directory, policy):
    (directory / "policy").mkdir(parents=True)
    policy.save_pretrained(directory / "policy")
    torch.save({"model": policy.state_dict()}, directory / "actor.pt")


def test_a_changed_setting_is_named_with_both_values(tmp_path):
    """Before: resuming with policy.overrides.hidden_dim=32 failed in load_state_dict ("size mismatch for
    critic.6.weight") after every worker had started."""
    saved = make_policy("mlp", size="tiny", action_dim=2, state_dim=4)
    save_checkpoint(tmp_path, saved)
    changed = make_policy("mlp", size="tiny", action_dim=2, state_dim=4, hidden_dim=8)
    assert saved.config.hidden_dim != 8
    with pytest.raises(ValueError) as error:
        check_same_model(str(tmp_path), "runner.resume", saved.state_dict(), changed)
    message = str(error.value)
    assert message.startswith(f"runner.resume={str(tmp_path)!r} holds a different model than this run builds")
    assert f"hidden_dim: checkpoint {saved.config.hidden_dim}, this run 8" in message
    assert "state_dim" not in message  # only what differs
    assert f"policy.checkpoint={tmp_path}/policy" in message


def test_the_same_model_passes(tmp_path):
    policy = make_policy("mlp", size="tiny", action_dim=2, state_dim=4)
    check_same_model(str(tmp_path), "runner.resume", policy.state_dict(), policy)


def test_a_run_directory_lists_its_checkpoints(tmp_path):
    for name in ("iteration_000004", "iteration_000009"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / "actor.pt").write_bytes(b"")
    (tmp_path / "checkpoints" / "best").mkdir()  # policy only: not resumable
    listed = resumable_below(str(tmp_path))
    root = re.escape(str(tmp_path))
    assert re.fullmatch(
        rf"; checkpoints below it: '{root}/checkpoints/iteration_000004', '{root}/checkpoints/iteration_000009'", listed
    )
    assert resumable_below(str(tmp_path / "checkpoints" / "best")) == ""


def test_resume_directory_is_checked_before_any_worker_starts(tmp_path):
    """Before: runner.resume=<a path that does not exist> said "holds no actor.pt checkpoint", from the actor, after
    every worker (and the envs) had started."""
    from rlinf_embodied.config import TrainConfig
    from rlinf_embodied.train import check_train_config
    from rlinf_embodied.workers.resume_check import check_resume_directory

    cfg = TrainConfig()
    cfg.runner.resume = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"runner.resume='.*missing' does not exist: pass a checkpoints/<name>"):
        check_train_config(cfg)
    with pytest.raises(FileNotFoundError, match=r"runner.resume='.*' holds no actor.pt checkpoint$"):
        check_resume_directory(str(tmp_path), "runner.resume")
    (tmp_path / "actor.pt").write_bytes(b"")
    assert check_resume_directory(str(tmp_path), "runner.resume") == str(tmp_path / "actor.pt")
    (tmp_path / "policy").mkdir()  # the checkpoint's saved policy: before, only "holds no actor.pt checkpoint"
    root = re.escape(str(tmp_path))
    with pytest.raises(
        FileNotFoundError,
        match=rf"^runner.resume='{root}/policy' holds no actor.pt checkpoint; it is the policy directory inside "
        rf"the checkpoint '{root}' \(the weights alone, for policy.checkpoint\): pass the checkpoint itself, "
        rf"runner.resume={root}$",
    ):
        check_resume_directory(str(tmp_path / "policy"), "runner.resume")
    cfg.runner.resume = str(tmp_path)
    (tmp_path / "sft.json").write_text("{}")  # SFT's checkpoints/<name>: before, its step 2000 read as iteration 2000
    with pytest.raises(ValueError, match=r"is an SFT checkpoint .* policy.checkpoint=.*/policy$"):
        check_train_config(cfg)


def test_a_checkpoint_of_another_policy_is_named_before_any_worker_starts(tmp_path):
    """Before: policy=mlp policy.checkpoint=<a flow_mlp checkpoint>, or a directory without config.json, failed in
    each worker's from_pretrained after Ray had started."""
    from rlinf_embodied.policies import make_policy
    from rlinf_embodied.workers.policy_loading import check_policy_config
    from rlinf_embodied.config import PolicyConfig

    make_policy("flow_mlp", size="tiny", action_dim=2, state_dim=4).save_pretrained(tmp_path / "policy")
    with pytest.raises(ValueError, match=r"holds policy 'flow_mlp', but policy=mlp: select policy=flow_mlp"):
        check_policy_config(PolicyConfig(name="mlp", checkpoint=str(tmp_path / "policy")))
    with pytest.raises(FileNotFoundError, match=r"policy.checkpoint='.*' has no config.json.*saved policies below"):
        check_policy_config(PolicyConfig(name="flow_mlp", checkpoint=str(tmp_path)))
    check_policy_config(PolicyConfig(name="flow_mlp", checkpoint=str(tmp_path / "policy")))
