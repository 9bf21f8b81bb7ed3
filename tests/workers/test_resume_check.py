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


def saved_run_checkpoint(directory, policy, env_id, control_mode):
    """A checkpoint as the actor writes one: actor.pt, the policy's save_pretrained copy and its env record."""
    from rlinf_embodied.envs.action_settings import write_action_settings

    save_checkpoint(directory, policy)
    write_action_settings(str(directory / "policy"), env_id, {"control_mode": control_mode})
    return directory


def test_a_resume_the_checkpoint_cannot_continue_is_refused_before_any_worker_starts(tmp_path, monkeypatch):
    """Before: another policy, another env's dims or another hidden_dim were refused by the actor's load_checkpoint,
    after every worker had started (54-88 s on 2 cores); its policy/config.json and env_actions.json tell them."""
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.train import check_train_config
    from rlinf_embodied.workers import resume_check

    pushcube = ("rlinf/ManiSkill-PushCube", "pd_ee_delta_pos")  # the default env group's
    trained = make_policy("mlp", size="tiny", action_dim=4, state_dim=35)
    run = saved_run_checkpoint(tmp_path / "iteration_000001", trained, *pushcube)
    root = re.escape(str(run))
    probed = []

    def probe(env_cfg):  # building PickCube in a child process takes 10-15 s on 2 cores: its spec, recorded
        probed.append(env_cfg.id)
        return {"action_dim": 8, "state_dim": 42}

    monkeypatch.setattr(resume_check, "probed_env_dims", probe)

    def check(*overrides):
        check_train_config(compose_config("config", [f"runner.resume={run}", "policy.size=tiny", *overrides]))

    check()  # the run it continues: the checkpoint's env, so its dims (nothing built)
    assert probed == []
    with pytest.raises(
        ValueError,
        match=rf"^runner.resume='{root}' trained policy 'mlp', this run asks for 'flow_mlp': select policy=mlp",
    ):
        check("policy=flow_mlp")
    with pytest.raises(
        ValueError,
        match=rf"^runner.resume='{root}' holds a different model than this run builds; the policy settings that "
        rf"differ: hidden_dim: checkpoint 32, this run 128: resume with the settings it was trained with, or start a "
        rf"new run from its weights with policy.checkpoint={root}/policy where they still fit$",
    ):
        check("policy.overrides.hidden_dim=128")
    assert probed == []
    with pytest.raises(
        ValueError,
        match=r"holds a different model than this run builds; the policy settings that differ: action_dim: "
        r"checkpoint 4, this run 8; state_dim: checkpoint 35, this run 42; this run's env rlinf/ManiSkill-PickCube "
        r"sets action_dim and state_dim \(it was trained on rlinf/ManiSkill-PushCube .*env=maniskill_pushcube\): "
        r"resume with",
    ):
        check("env=maniskill_pickcube", "env.max_episode_steps=50")
    assert probed == ["rlinf/ManiSkill-PickCube"]


def test_a_resume_that_leaves_nothing_to_train_is_refused_by_train_and_place_before_ray(tmp_path, monkeypatch):
    """Probe 63 #10: before, resuming iteration 2 of a 3-iteration run was refused only in EmbodiedRunner, after Ray
    had started (and place printed that train command); the checkpoint's training_state.json tells the driver."""
    from rlinf_embodied import scheduler
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.place import place
    from rlinf_embodied.runners.embodied_runner import write_saved_iteration
    from rlinf_embodied.train import check_train_config

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started before the refusal")

    monkeypatch.setattr(scheduler.Cluster, "from_config", no_ray)
    trained = make_policy("mlp", size="tiny", action_dim=4, state_dim=35)
    run = saved_run_checkpoint(tmp_path / "iteration_000002", trained, "rlinf/ManiSkill-PushCube", "pd_ee_delta_pos")
    write_saved_iteration(str(run), 2, 600)

    def config(iterations):
        return compose_config(
            "config", [f"runner.resume={run}", "policy.size=tiny", f"runner.max_iterations={iterations}"]
        )

    refusal = (
        r"ended at iteration 2, so runner.max_iterations=3 leaves nothing to train; set runner.max_iterations above 3"
    )
    with pytest.raises(ValueError, match=refusal):
        check_train_config(config(3))
    with pytest.raises(ValueError, match=refusal):
        place(config(3), log=lambda line: None)
    check_train_config(config(4))  # one iteration left


def test_the_policy_checkpoint_sets_the_architecture_a_resume_is_compared_with(tmp_path, monkeypatch):
    """With policy.checkpoint (RL from SFT, as its printed resume command repeats it), the model is that
    checkpoint's config.json: the env is not probed, and another architecture there is named."""
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.train import check_train_config
    from rlinf_embodied.workers import resume_check

    def probe(env_cfg):
        raise AssertionError("the env's dims are not read where policy.checkpoint sets them")

    monkeypatch.setattr(resume_check, "probed_env_dims", probe)
    trained = make_policy("mlp", size="tiny", action_dim=8, state_dim=42)
    run = saved_run_checkpoint(tmp_path / "run", trained, "rlinf/ManiSkill-PushCube", "pd_ee_delta_pos")
    trained.save_pretrained(tmp_path / "sft")
    resume = [f"runner.resume={run}", "env=maniskill_pickcube", "env.max_episode_steps=50"]
    check_train_config(compose_config("config", [*resume, f"policy.checkpoint={tmp_path / 'sft'}"]))
    make_policy("mlp", size="tiny", action_dim=8, state_dim=42, hidden_dim=16).save_pretrained(tmp_path / "wider")
    with pytest.raises(ValueError, match=r"the policy settings that differ: hidden_dim: checkpoint 32, this run 16:"):
        check_train_config(compose_config("config", [*resume, f"policy.checkpoint={tmp_path / 'wider'}"]))


@pytest.mark.slow
def test_the_env_dims_are_read_in_a_child_process():
    """probed_env_dims builds one env of the id (gym.make, the batching options dropped) in a spawned process; an
    env that does not build there: None (the env workers read the dims then)."""
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.workers.resume_check import probed_env_dims

    pickcube = compose_config("config", ["env=maniskill_pickcube", "env.kwargs.num_workers=1"]).env
    assert probed_env_dims(pickcube) == {
        "action_dim": 8,
        "state_dim": 42,
    }
    assert probed_env_dims(compose_config("config", ["env.kwargs.control_mode=bogus"]).env) is None


def test_resume_and_checkpoint_paths_that_are_files_or_saved_policies_are_named_as_such(tmp_path):
    """Before: an existing file given to runner.resume or from_pretrained was reported as "does not exist", and a
    save_pretrained directory given to runner.resume got no pointer to policy.checkpoint."""
    from rlinf_embodied.policies import load_policy
    from rlinf_embodied.policies.mlp.modeling import MLPPolicy
    from rlinf_embodied.workers.resume_check import check_resume_directory

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(FileNotFoundError, match=r"^runner.resume='.*afile' is a file, not a directory: pass a"):
        check_resume_directory(str(afile), "runner.resume")
    with pytest.raises(FileNotFoundError, match=r"^checkpoint directory '.*afile' is a file, not a directory$"):
        MLPPolicy.from_pretrained(afile)
    with pytest.raises(FileNotFoundError, match=r"no policy checkpoint at '.*afile' \(is a file, not a directory\)"):
        load_policy(afile)
    saved = tmp_path / "saved"
    make_policy("mlp", size="tiny", action_dim=2, state_dim=4).save_pretrained(saved)
    with pytest.raises(
        FileNotFoundError,
        match=rf"^runner.resume='{re.escape(str(saved))}' holds no actor.pt checkpoint; it is a policy saved by "
        rf"save_pretrained .*policy.checkpoint={re.escape(str(saved))}, or pass runner.resume a checkpoints/<name>",
    ):
        check_resume_directory(str(saved), "runner.resume")
    with pytest.raises(
        FileNotFoundError,
        match=rf"is a file, not a directory \(the checkpoint is the directory holding "
        rf"it, {re.escape(str(saved))}\)$",
    ):
        MLPPolicy.from_pretrained(saved / "model.safetensors")
