"""Every Hydra config group option composes onto the typed schema (a typo or wrong type would fail here)."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from rlinf_embodied.config import COLLOCATED_PLACEMENT, RunnerConfig, TrainConfig, compose_config, register_configs
from rlinf_embodied.paths import CONFIG_DIR
from rlinf_embodied.scheduler import ComponentPlacement

register_configs()


def options(group: str) -> list[str]:
    return sorted(name[:-5] for name in os.listdir(os.path.join(CONFIG_DIR, group)) if name.endswith(".yaml"))


@pytest.mark.parametrize("group", ["env", "policy", "algorithm", "cluster"])
def test_every_option_composes_onto_the_schema(group):
    for option in options(group):
        typed: TrainConfig = compose_config("config", [f"{group}={option}"])
        assert isinstance(typed, TrainConfig), (group, option)
        if group == "cluster":
            placement = ComponentPlacement(
                dict(typed.cluster.component_placement or COLLOCATED_PLACEMENT),
                num_gpus=typed.cluster.num_gpus_per_node,
                num_nodes=typed.cluster.num_nodes,
            )
            assert set(placement.components) == {"env", "rollout", "actor"}, option


def test_a_misspelled_override_names_the_key():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        with pytest.raises(Exception, match="max_iteration"):
            compose(config_name="config", overrides=["runner.max_iteration=3"])


@pytest.mark.parametrize(
    "field_name, value",
    [("eval_rounds", 0), ("eval_interval", -1), ("save_interval", -2), ("max_iterations", 0), ("rollout_steps", 0)],
)
def test_runner_config_rejects_out_of_range_intervals(field_name, value):
    with pytest.raises(ValueError, match=f"runner.{field_name}={value}"):
        RunnerConfig(**{field_name: value})


@pytest.mark.parametrize(
    "config_name, overrides, message",
    [  # before: each accepted, and the setting never acted (its first step lay past the run's end)
        ("config", ["runner.max_iterations=10", "runner.save_interval=20"], r"no periodic checkpoint .* <= 10"),
        (
            "config",
            ["runner.max_iterations=10", "algorithm.critic_warmup_iterations=10"],
            r"critic_warmup_iterations=10 >= runner.max_iterations=10: the policy would never train",
        ),
        ("sft", ["sft.max_steps=50"], r"sft.warmup_steps=100 > sft.max_steps=50: the lr would never reach sft.lr"),
        ("sft", ["sft.save_interval=3000"], r"sft.save_interval=3000 > sft.max_steps=2000: no step_XXXXXX"),
        ("sft", ["sft.val_episodes=2", "sft.val_interval=2500"], r"held out of training and never measured"),
        ("sft", ["sft.image_probe_interval=2001"], r"sft.image_probe_interval=2001 > .* no image probe would run"),
    ],
)
def test_an_interval_past_the_run_is_refused(config_name, overrides, message):
    with pytest.raises(ValueError, match=message):
        compose_config(config_name, overrides)


def test_anneal_lr_is_refused_for_a_one_iteration_run():
    """Probe 63 #12: before, accepted; the only iteration ran at the full lr, as without it."""
    with pytest.raises(ValueError, match=r"algorithm.anneal_lr=True would change nothing: runner.max_iterations=1"):
        compose_config("config", ["runner.max_iterations=1", "algorithm.anneal_lr=true"])
    compose_config("config", ["runner.max_iterations=2", "algorithm.anneal_lr=true"])
    compose_config("config", ["runner.max_iterations=1"])


def test_save_final_off_is_refused_where_the_periodic_save_writes_the_last_iteration():
    """Probe 63 #4: before, save_interval=5 with max_iterations=10 checkpointed the last iteration anyway."""
    with pytest.raises(ValueError, match=r"runner.save_final=false with runner.save_interval=5, which divides .*=10"):
        compose_config("config", ["runner.max_iterations=10", "runner.save_interval=5", "runner.save_final=false"])
    for interval in (0, 3):  # no periodic save, or none at the last iteration: save_final=false skips that one
        compose_config(
            "config", ["runner.max_iterations=10", f"runner.save_interval={interval}", "runner.save_final=false"]
        )


@pytest.mark.parametrize(
    "config_name, overrides",
    [  # the same settings at the run's last step still act there
        ("config", ["runner.max_iterations=10", "runner.save_interval=10"]),
        ("config", ["runner.max_iterations=10", "algorithm.critic_warmup_iterations=9"]),
        ("sft", ["sft.max_steps=100"]),
        ("sft", ["sft.val_episodes=2", "sft.val_interval=2000"]),
    ],
)
def test_an_interval_that_ends_with_the_run_passes(config_name, overrides):
    compose_config(config_name, overrides)


@pytest.mark.parametrize(
    "config_name, overrides, message",
    [
        ("config", ["runner.eval_rounds=2"], r"runner.eval_rounds=2 would change nothing: runner.eval_interval=0"),
        ("sft", ["sft.eval_episodes=20"], r"sft.eval_episodes=20 would change nothing: sft.eval_interval=0"),
        ("sft", ["sft.val_interval=50"], r"sft.val_interval=50 would change nothing: sft.val_episodes=0"),
        (
            "eval",
            ["eval.video=false", "eval.video_envs=2"],
            r"eval.video_envs=2 would change nothing: eval.video=false",
        ),
        (
            "sft",
            ["sft.lr_schedule=constant", "sft.min_lr_ratio=0.5"],
            r"sft.min_lr_ratio=0.5 would change nothing: sft.lr_schedule=constant never decays",
        ),
    ],
)
def test_a_setting_that_nothing_reads_is_refused(config_name, overrides, message):
    """Each was accepted and ignored: no evaluation to play its rounds or episodes, no held-out episodes to measure
    every val_interval steps, no decay to floor."""
    with pytest.raises(ValueError, match=message):
        compose_config(config_name, overrides)


@pytest.mark.parametrize(
    "config_name, overrides",
    [
        ("config", ["runner.eval_rounds=2", "runner.eval_interval=5"]),
        ("sft", ["sft.eval_episodes=20", "sft.eval_interval=100"]),
        ("sft", ["sft.val_interval=50", "sft.val_episodes=2"]),
        ("sft", ["sft.lr_schedule=constant"]),
        ("eval", ["eval.video_envs=2"]),
    ],
)
def test_the_same_settings_pass_where_they_are_read(config_name, overrides):
    compose_config(config_name, overrides)


@pytest.mark.parametrize(
    "config_name, override, message",
    [  # before: each empty path read as unset; the run started fresh or wrote to Hydra's directory, silently
        ("config", "runner.resume=", r"runner.resume='' is empty: .* \(start a new run\)"),
        ("config", "runner.output_dir=", r"runner.output_dir='' is empty: .* \(Hydra's run directory\)"),
        ("eval", "eval.output_dir=' '", r"eval.output_dir=' ' is empty"),
        ("sft", "sft.resume=", r"sft.resume='' is empty"),
        ("sft", "sft.output_dir=", r"sft.output_dir='' is empty"),
    ],
)
def test_an_empty_path_is_refused(config_name, override, message):
    with pytest.raises(ValueError, match=message):
        compose_config(config_name, [override])


def test_an_sft_seed_whose_evaluation_seeds_go_below_zero_is_refused():
    """Before: eval.seed's error, naming a setting the user never gave, at SFT's first evaluation."""
    with pytest.raises(ValueError, match=r"sft.seed=-1001: .* = -1, .*; set sft.seed >= -1000"):
        compose_config("sft", ["sft.seed=-1001", "sft.eval_interval=100"])
    compose_config("sft", ["sft.seed=-1000", "sft.eval_interval=100"])
    compose_config("sft", ["sft.seed=-5000"])  # no evaluation: any seed


@pytest.mark.parametrize(
    "override, message",
    [
        ("env.num_envs=0", "env.num_envs=0"),
        ("env.max_episode_steps=0", "or null"),
        # before: make_vec's "got multiple values for keyword argument 'obs_mode'" inside every env worker
        (
            "+env.kwargs.obs_mode=rgb",
            r"env.kwargs.obs_mode='rgb' repeats the setting env.obs_mode: set env.obs_mode=rgb",
        ),
        ("+env.kwargs.max_episode_steps=5", r"repeats the setting env.max_episode_steps"),
    ],
)
def test_env_config_names_the_setting_out_of_range(override, message):
    """Before: gym.make_vec's 'num_envs must be an int >= 1' once the workers had started, naming no config key."""
    with pytest.raises(ValueError, match=message):
        compose_train(override)


def test_env_count_that_splits_a_grpo_group_is_refused_before_any_worker_starts():
    """Before: a rollout worker's "not a multiple of the GRPO group size 8" once Ray and the envs had started,
    naming no algorithm setting."""
    with pytest.raises(ValueError, match=r"env.num_envs=12 is not a multiple of algorithm.group_size=8 .* e.g. 16"):
        compose_train("algorithm=grpo", "env.num_envs=12")
    assert compose_train("algorithm=grpo", "env.num_envs=12", "algorithm.group_size=4").env.num_envs == 12
    assert compose_train("algorithm=ppo", "env.num_envs=12").env.num_envs == 12  # GAE groups nothing


def test_training_with_deterministic_rollouts_is_rejected():
    """Before: runner.deterministic_rollout=true trained a flow policy on chains with zero log-probs: every policy
    gradient was zero and the run went through its iterations without a word."""
    with pytest.raises(ValueError, match=r"runner.deterministic_rollout=true: .*runner.eval_interval"):
        compose_train("runner.deterministic_rollout=true")


def compose_train(*overrides: str) -> TrainConfig:
    return compose_config("config", list(overrides))


def test_the_placement_and_policy_overrides_are_settable_from_the_command_line():
    from rlinf_embodied.runners.embodied_runner import component_placement

    cfg = compose_train("cluster=disaggregated_2gpu", "cluster.component_placement.env=1")
    placement = component_placement(cfg)
    assert placement.gpus("env") == [1] and placement.gpus("rollout") == [0] and placement.gpus("actor") == [1]
    cfg = compose_train("cluster.num_gpus_per_node=2", "cluster.component_placement={env:0,rollout:0,actor:1}")
    assert component_placement(cfg).mode == "disaggregated"
    cfg = compose_train("policy.overrides.hidden_dim=64", "env.kwargs.render_mode=rgb_array")
    assert cfg.policy.overrides == {"hidden_dim": 64} and cfg.env.kwargs["render_mode"] == "rgb_array"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):  # the rest of the schema stays strict
        with pytest.raises(Exception, match="cluster.foo"):
            compose(config_name="config", overrides=["cluster.foo=1"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["cluster.component_placement={env:'0-',rollout:all,actor:all}"], "range '0-' lacks its end"),
        (["cluster=disaggregated_2gpu", "cluster.component_placement.env=3"], "id 3 is beyond the cluster's 2 GPUs"),
        (["cluster.component_placement.critic=0"], "unknown component 'critic'"),
        (["policy.size=defualt"], r"policy.size='defualt' is not a size of policy 'mlp'; valid: \['default', 'tiny'\]"),
        (["policy.name=mpl"], "unknown policy 'mpl'; available: "),
        (["policy.overrides.hidden_dims=64"], r"unknown key\(s\) \['hidden_dims'\].*valid: .*'hidden_dim'"),
        (["policy.overrides.hidden_dim=0"], "hidden_dim=0"),
        (["policy.overrides.hidden_dim=wide"], "policy.overrides.hidden_dim='wide' .* not a valid int"),
        (["policy=pi0"], "needs its weights"),
    ],
)
def test_the_driver_rejects_bad_settings_before_ray_starts(overrides, message, monkeypatch):
    import rlinf_embodied.scheduler as scheduler
    from rlinf_embodied.train import run_training

    def no_cluster(*args, **kwargs):
        raise AssertionError("Ray was started before the config was checked")

    monkeypatch.setattr(scheduler, "Cluster", no_cluster)
    with pytest.raises(ValueError, match=message):
        run_training(compose_train(*overrides), output_dir="/nonexistent")


def test_compose_config_gives_the_typed_config_an_entry_point_would_run_with():
    from rlinf_embodied.config import SFTRunConfig, compose_config

    cfg = compose_config("sft", ["sft.eval_interval=5", "sft.eval_async=true", "policy=pi0"])
    assert isinstance(cfg, SFTRunConfig) and cfg.sft.eval_async and cfg.policy.name == "pi0"
    assert isinstance(compose_config("config", []), TrainConfig)
    with pytest.raises(ValueError, match=r"sft.eval_async=true .* sft.eval_interval=0"):  # the schema's checks run
        compose_config("sft", ["sft.eval_async=true"])


def test_eval_plays_the_default_train_env_and_sft_the_default_collect_env():
    """Each entry point's checkpoint meets the env the next one defaults to: `train` then `eval policy.checkpoint=`
    (README, examples/train_and_eval.sh) scored a PushCube policy on PickCube and stopped at its action width."""
    envs = {name: compose_config(name, []).env for name in ("config", "eval", "collect", "sft")}
    assert (envs["eval"].id, envs["eval"].kwargs) == (envs["config"].id, envs["config"].kwargs)
    assert (envs["sft"].id, envs["sft"].kwargs) == (envs["collect"].id, envs["collect"].kwargs)


def test_a_chunk_level_log_prob_without_chunks_is_refused_before_ray_starts():
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.train import check_train_config

    with pytest.raises(ValueError, match=r"algorithm.logprob_level=chunk would change nothing: policy 'mlp' acts in"):
        check_train_config(compose_config("config", ["algorithm.logprob_level=chunk"]))
    check_train_config(compose_config("config", ["algorithm.logprob_level=token"]))  # per action dim: an effect


def test_algorithm_settings_the_policy_cannot_use_are_refused_before_ray_starts():
    """Before: GAE ran on a policy without a value head (values 0, value loss 0), and entropy_coef with Flow-SDE's
    fixed noise schedule changed train/loss only."""
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.train import check_train_config

    no_critic = ["policy=flow_mlp", "+policy.overrides.add_value_head=false"]
    with pytest.raises(ValueError, match=r"adv_type='gae' reads a critic, but policy 'flow_mlp' has add_value_head"):
        check_train_config(compose_config("config", no_critic))
    check_train_config(compose_config("config", [*no_critic, "algorithm=grpo", "env.num_envs=8"]))
    with pytest.raises(ValueError, match=r"algorithm.entropy_coef=0.5 would change nothing: .*'flow_sde'"):
        check_train_config(compose_config("config", ["policy=flow_mlp", "algorithm.entropy_coef=0.5"]))
    learned_noise = ["policy=flow_mlp", "+policy.overrides.noise_method=flow_noise", "algorithm.entropy_coef=0.5"]
    check_train_config(compose_config("config", learned_noise))
    check_train_config(compose_config("config", ["algorithm.entropy_coef=0.5"]))  # the mlp's Gaussian: an effect


def test_an_initialising_override_on_resume_is_warned_about(caplog):
    """Before: runner.resume=... policy.overrides.init_log_std=-3 trained on at the checkpoint's std, silently."""
    from rlinf_embodied.config import TrainConfig
    from rlinf_embodied.train import warn_initialising_overrides_on_resume

    cfg = TrainConfig()
    cfg.policy.overrides = {"init_log_std": -3.0, "hidden_dim": 64}
    assert warn_initialising_overrides_on_resume(cfg) == []  # a new run reads it
    cfg.runner.resume = "outputs/run/checkpoints/iteration_000001"
    with caplog.at_level("WARNING"):
        assert warn_initialising_overrides_on_resume(cfg) == ["init_log_std"]
    assert "policy.overrides.init_log_std=-3.0 is not read with runner.resume" in caplog.text


def test_a_checkpoint_given_with_resume_is_warned_about(caplog):
    """Before: runner.resume=... policy.checkpoint=<another SFT> trained on from the resumed weights, silently."""
    from rlinf_embodied.config import TrainConfig
    from rlinf_embodied.train import warn_checkpoint_weights_not_read_on_resume

    cfg = TrainConfig()
    cfg.policy.checkpoint = "outputs/sft/checkpoints/final/policy"
    assert not warn_checkpoint_weights_not_read_on_resume(cfg)  # a new run trains from it
    cfg.runner.resume = "outputs/run/checkpoints/iteration_000001"
    with caplog.at_level("WARNING"):
        assert warn_checkpoint_weights_not_read_on_resume(cfg)
    assert (
        "policy.checkpoint=outputs/sft/checkpoints/final/policy: its weights are not trained with "
        "runner.resume=outputs/run/checkpoints/iteration_000001, which wins" in caplog.text
    )
    cfg.policy.checkpoint = None
    assert not warn_checkpoint_weights_not_read_on_resume(cfg)


def test_the_printed_resume_command_repeating_the_start_checkpoint_is_not_warned_about(tmp_path, caplog):
    """The printed resume command repeats the run's policy.checkpoint; a checkpoint records the one its run started
    from (EmbodiedRunner.save_checkpoint), and only another one is warned about (before: following it warned)."""
    from types import SimpleNamespace

    from rlinf_embodied.config import TrainConfig
    from rlinf_embodied.runners.embodied_runner import EmbodiedRunner
    from rlinf_embodied.train import warn_checkpoint_weights_not_read_on_resume

    cfg = TrainConfig()
    cfg.policy.checkpoint = str(tmp_path / "sft" / "checkpoints" / "final" / "policy")
    saved = SimpleNamespace(wait=lambda: None)
    runner = SimpleNamespace(  # what save_checkpoint reads of the runner
        cfg=cfg, output_dir=str(tmp_path / "run"), total_env_steps=8, actor_group=SimpleNamespace()
    )
    runner.actor_group.save_checkpoint = lambda directory, *_: os.makedirs(directory) or saved
    cfg.runner.resume = EmbodiedRunner.save_checkpoint(runner, 1)
    with caplog.at_level("WARNING"):
        assert not warn_checkpoint_weights_not_read_on_resume(cfg)
        cfg.policy.checkpoint = str(tmp_path / "another" / "policy")
        assert warn_checkpoint_weights_not_read_on_resume(cfg)
    assert caplog.text.count("its weights are not trained with runner.resume") == 1


@pytest.mark.parametrize(
    "config_name, override, message",
    [  # before: each composed, and OmegaConf.to_object dropped the key: the run went on with the default
        (
            "config",
            "+env.max_episode_step=10",
            r"env.max_episode_step is not a setting of env .* env.max_episode_steps\?",
        ),
        ("config", "+runner.max_iteration=3", r"runner.max_iteration is .* did you mean runner.max_iterations"),
        ("config", "+algorithm.gama=0.9", r"algorithm.gama is .* did you mean algorithm.gamma\? valid: adv_type, "),
        ("config", "+foo=1", r"foo is not a setting of the config .* valid: env, policy, algorithm, cluster, runner"),
        ("eval", "+eval.num_episode=3", r"eval.num_episode is .* did you mean eval.num_episodes"),
        ("sft", "+sft.max_step=3", r"sft.max_step is .* did you mean sft.max_steps"),
        ("collect", "+collect.num_episode=3", r"collect.num_episode is .* did you mean collect.num_episodes"),
    ],
)
def test_an_added_key_the_schema_lacks_is_refused_with_the_closest_names(config_name, override, message):
    with pytest.raises(ValueError, match=message):
        compose_config(config_name, [override])


def test_added_keys_under_the_open_mappings_are_kept():
    cfg = compose_train("+env.kwargs.render_mode=rgb_array", "+policy.overrides.hidden_dim=64")
    assert cfg.env.kwargs["render_mode"] == "rgb_array" and cfg.policy.overrides == {"hidden_dim": 64}


@pytest.mark.parametrize("entry", ["train", "eval", "sft", "collect", "place"])
def test_every_entry_point_refuses_an_added_key_the_schema_lacks(entry, tmp_path, monkeypatch, capsys):
    """The entry points run Hydra's main, not compose_config: each must check its composed config the same way."""
    import importlib
    import sys

    from omegaconf import OmegaConf

    def not_checked(cfg):  # an entry point that skipped the check would run the job: fail fast instead
        raise AssertionError("OmegaConf.to_object reached before the keys were checked")

    monkeypatch.setattr(OmegaConf, "to_object", not_checked)
    module = importlib.import_module(f"rlinf_embodied.{entry}")
    argv = [entry, "+env.max_episode_step=10", f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):
        module.main()
    assert "env.max_episode_step is not a setting of env" in capsys.readouterr().err


def test_training_into_a_directory_holding_a_run_is_refused_unless_it_resumes_from_it(tmp_path, monkeypatch, capsys):
    """Before: `python -m rlinf_embodied.train runner.output_dir=<a finished run>` exited 0 having truncated its
    metrics.jsonl (3 lines -> 1) and mixed its checkpoints and TensorBoard events with the new run's. Now refused
    before anything is written there; the printed resume command (runner.resume=<a checkpoint in it>) still runs."""
    import logging
    import sys

    from rlinf_embodied import train
    from rlinf_embodied.runners.metrics_logger import MetricsLogger

    run = tmp_path / "run"
    logger = MetricsLogger(str(run))
    for iteration in range(3):
        logger.log(iteration, {"train/loss": 0.5})
        os.makedirs(run / "checkpoints" / f"iteration_{iteration:06d}")
    logger.close()
    before = (run / "metrics.jsonl").read_text()
    started = []
    monkeypatch.setattr(train, "run_training", lambda cfg, output_dir, stop=None: started.append(cfg) or [])
    handlers = list(logging.getLogger().handlers)

    def main(*overrides: str) -> None:
        argv = ["train", *overrides, f"runner.output_dir={run}", f"hydra.run.dir={tmp_path / 'hydra'}"]
        monkeypatch.setattr(sys, "argv", argv + ["hydra.output_subdir=null"])
        try:
            train.main()
        finally:  # log_into's file handler: not into later tests
            for handler in set(logging.getLogger().handlers) - set(handlers):
                logging.getLogger().removeHandler(handler)
                handler.close()

    try:
        with pytest.raises(SystemExit):
            main()
        error = capsys.readouterr().err
        assert f"runner.output_dir='{run}' already holds a run's outputs (metrics.jsonl, checkpoints/" in error
        assert f"runner.resume={run / 'checkpoints' / 'iteration_000002'}" in error and "<new dir>" in error
        assert not started and (run / "metrics.jsonl").read_text() == before
        assert not (run / "config.yaml").exists() and not (run / "train.log").exists()  # nothing written there
        main(f"runner.resume={run / 'checkpoints' / 'iteration_000001'}", "runner.max_iterations=4")
        assert [cfg.runner.resume for cfg in started] == [str(run / "checkpoints" / "iteration_000001")]
    finally:
        monkeypatch.undo()


def test_a_value_head_override_under_a_critic_free_estimator_is_refused_at_start_up():
    """The train entry point's check (before: value_hidden_dim=64 under algorithm=grpo trained the same as without)."""
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.train import reject_algorithm_settings_the_policy_cannot_use

    def check(*overrides: str) -> None:
        reject_algorithm_settings_the_policy_cannot_use(compose_config("config", list(overrides)))

    with pytest.raises(ValueError, match=r"policy.overrides.value_hidden_dim=64 would change nothing: .*'grpo'"):
        check("algorithm=grpo", "policy=pi0", "policy.size=tiny", "+policy.overrides.value_hidden_dim=64")
    check("algorithm=ppo", "policy=pi0", "policy.size=tiny", "+policy.overrides.value_hidden_dim=64")
