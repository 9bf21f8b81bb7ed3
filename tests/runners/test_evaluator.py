"""Evaluation runner on CPU: a saved policy, N episodes per task, results.json, success table, videos."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gymnasium as gym
import pytest
import torch

from rlinf_embodied.config import EnvConfig, EvalConfig, PolicyConfig
from rlinf_embodied.envs.testing import ToyReachFactory
from rlinf_embodied.envs.vector import SubprocVectorEnv
from rlinf_embodied.policies import make_policy
from rlinf_embodied.runners.evaluator import evaluate_policy, print_success_table

TOY_ID = "rlinf-test/ToyReachRGB"


def make_toy_vector_env(
    num_envs: int,
    obs_mode: str = "rgb",
    max_episode_steps: int | None = None,
    ignore_terminations: bool = False,
    **kwargs,
) -> SubprocVectorEnv:
    return SubprocVectorEnv(
        [ToyReachFactory(image_size=16, **kwargs) for _ in range(num_envs)],
        num_workers=1,
        max_episode_steps=max_episode_steps,
        ignore_terminations=ignore_terminations,
    )


if TOY_ID not in gym.registry:
    gym.register(TOY_ID, vector_entry_point=make_toy_vector_env)


@pytest.fixture()
def checkpoint(tmp_path):
    policy = make_policy("mlp", size="tiny", action_dim=2, state_dim=4)
    path = tmp_path / "policy"
    policy.save_pretrained(path)
    return str(path)


def test_eval_writes_results_table_and_video(tmp_path, checkpoint, capsys):
    env_cfg = EnvConfig(id=TOY_ID, num_envs=2, obs_mode="rgb", max_episode_steps=5)
    policy_cfg = PolicyConfig(name="mlp", checkpoint=checkpoint)
    eval_cfg = EvalConfig(num_episodes=5, num_envs=2, video=True, video_envs=2)
    results = evaluate_policy(env_cfg, policy_cfg, eval_cfg, str(tmp_path / "eval"))
    (result,) = results
    assert result.episodes == 5  # counted episode by episode, not rounded up to whole env batches
    assert 0 <= result.successes <= 5
    assert result.mean_length <= 5
    payload = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert payload["episodes"] == 5
    assert payload["episodes_from"] == {"seed": 1000, "num_envs": 2}  # both pick the episodes
    assert payload["deterministic"] is True
    task = payload["tasks"][0]
    assert task["success_once_rate"] == pytest.approx(result.successes / 5)
    assert task["success_at_end_rate"] == pytest.approx(result.successes_at_end / 5)
    assert task["success_rate"] == task["success_once_rate"]  # the old key, kept: success at any step
    assert payload["overall_success_rate"] == payload["overall_success_once_rate"]
    assert result.video is not None and os.path.getsize(result.video) > 0
    print_success_table(results)
    out = capsys.readouterr().out
    assert "success (any step)" in out and "success at end" in out


def test_eval_without_rgb_skips_the_video(tmp_path, checkpoint, caplog):
    env_cfg = EnvConfig(id=TOY_ID, num_envs=2, obs_mode="state", max_episode_steps=3)
    toy_without_rgb = "rlinf-test/ToyReachState"
    if toy_without_rgb not in gym.registry:
        gym.register(
            toy_without_rgb,
            vector_entry_point=lambda num_envs, **kw: SubprocVectorEnv(
                [ToyReachFactory() for _ in range(num_envs)], num_workers=1, max_episode_steps=kw["max_episode_steps"]
            ),
        )
    env_cfg.id = toy_without_rgb
    results = evaluate_policy(
        env_cfg,
        PolicyConfig(name="mlp", checkpoint=checkpoint),
        EvalConfig(num_episodes=2, num_envs=2, video=True),
        str(tmp_path / "eval"),
    )
    assert results[0].video is None
    assert "renders no rgb" in caplog.text  # eval.video=true by default: a warning, no error
    # given on the command line, a video setting that cannot take effect is refused (before: the same warning)
    with pytest.raises(
        ValueError,
        match=r"^eval.video_envs=2 would change nothing: rlinf-test/ToyReachState with obs_mode='state' renders no "
        r"rgb frames, so no video is written; use env.obs_mode=rgb .*, or leave eval.video_envs=2 out$",
    ):
        evaluate_policy(
            env_cfg,
            PolicyConfig(name="mlp", checkpoint=checkpoint),
            EvalConfig(num_episodes=2, num_envs=2, video=True, video_envs=2),
            str(tmp_path / "eval"),
            video_settings=["eval.video_envs=2"],
        )


def test_only_the_video_settings_the_command_line_gives_are_refused_where_nothing_renders():
    from rlinf_embodied.eval import given_video_settings

    assert given_video_settings(["eval.num_episodes=4"], EvalConfig()) == []  # the default eval.video=true
    assert given_video_settings(["eval.video=true"], EvalConfig()) == ["eval.video=true"]
    assert given_video_settings(["eval.video_envs=2"], EvalConfig(video_envs=2)) == ["eval.video_envs=2"]
    assert given_video_settings(["+eval.video=true", "eval.video_envs=3"], EvalConfig(video_envs=3)) == [
        "eval.video=true",
        "eval.video_envs=3",
    ]
    assert given_video_settings(["eval.video=false"], EvalConfig(video=False)) == []  # records nothing, asks nothing


def test_success_table_prints_every_task_name_in_full(capsys):
    """Before: rich read "[task 0]" as markup and dropped it, and cut names at 80 columns where stdout is no
    terminal ("rlinf/ManiSkill-PushC…")."""
    from rlinf_embodied.runners.evaluator import TaskResult

    long_name = "rlinf/ManiSkill-PushCube-" + "x" * 80 + "[task 12]"
    names = ["rlinf/LIBERO-Spatial[task 0]", "rlinf/LIBERO-Spatial[bold]", long_name]
    print_success_table([TaskResult(name, 4, 2, 1.0, 3.0) for name in names])
    lines = capsys.readouterr().out.splitlines()
    for name in names:
        assert any(name in line for line in lines), name  # whole, on one line
    assert "…" not in "".join(lines)


def test_eval_with_a_missing_checkpoint_names_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        evaluate_policy(
            EnvConfig(id=TOY_ID, num_envs=1, max_episode_steps=2),
            PolicyConfig(name="mlp", checkpoint=missing),
            EvalConfig(num_episodes=1, num_envs=1, video=False),
            str(tmp_path / "eval"),
        )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_episodes", 0, r"eval.num_episodes=0 must be >= 1 \(episodes per task\)"),
        ("num_envs", 0, r"eval.num_envs=0 must be >= 1"),
        ("video_envs", 0, r"eval.video_envs=0 must lie in \[1, eval.num_envs=4\] .*or eval.video=false"),
        ("video_envs", 5, r"eval.video_envs=5 must lie in \[1, eval.num_envs=4\]"),  # before: 4 recorded, silently
        ("seed", -1, r"eval.seed=-1 must be >= 0"),  # before: gymnasium's 'Seed must be greater or equal to zero'
        ("task_ids", [], r"eval.task_ids=\[\]: list each task to evaluate once"),  # before: 0 episodes, "0.0"
        ("task_ids", [0, 0], r"eval.task_ids=\[0, 0\]: list each task"),  # before: task 0 counted twice
    ],
)
def test_eval_config_rejects_sizes_that_would_evaluate_nothing(field, value, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(**{field: value})


def failed_eval(override: str, tmp_path, *more: str) -> subprocess.CompletedProcess:
    """`python -m rlinf_embodied.eval <override> ...`, which must fail (its stderr is then the test's subject)."""
    result = subprocess.run(
        [sys.executable, "-m", "rlinf_embodied.eval", override, *more, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    return result


def refused_eval(monkeypatch, capsys, *overrides: str, before: str = "episode") -> str:
    """`python -m rlinf_embodied.eval <overrides>` run by its entry point in this process (`main` with these
    arguments: Hydra's composition and every check `main` makes, in its order, without a second interpreter's
    seconds of imports; test_eval_rejects_env_num_envs_which_only_training_reads launches the command itself).
    It must be refused: a non-zero exit, whose stderr (with the error) is returned. `before`: "episode", the test
    fails if an episode starts; "env", already if an eval env is built."""
    import logging

    from rlinf_embodied import eval as eval_entry
    from rlinf_embodied.runners import evaluator

    def reached(what):
        def fail(*args, **kwargs):
            pytest.fail(f"{what} before the refusal")  # BaseException: Hydra's error report does not catch it

        return fail

    monkeypatch.setattr(evaluator, "_run_task", reached("an episode was played"))
    if before == "env":
        monkeypatch.setattr(evaluator, "make_eval_env", reached("an eval env was built"))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # else Hydra raises instead of printing and exiting
    monkeypatch.setattr(sys, "argv", ["eval", *overrides])
    handlers = list(logging.getLogger().handlers)
    try:
        eval_entry.main()
    except SystemExit as exit_:  # Hydra printed the error to stderr
        assert exit_.code not in (0, None)
        return capsys.readouterr().err
    except Exception as error:  # noqa: BLE001 - under a tracer (debugger, coverage) Hydra re-raises the error
        return capsys.readouterr().err + f"{type(error).__name__}: {error}"
    finally:
        for handler in set(logging.getLogger().handlers) - set(handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()
    pytest.fail(f"eval {' '.join(overrides)} was not refused")


def test_eval_rejects_env_num_envs_which_only_training_reads(tmp_path):
    """Before: `python -m rlinf_embodied.eval env.num_envs=32` ran eval.num_envs (4) envs without a word.
    The command itself, launched (the file's one launch: the module runs main, a refusal exits non-zero with the
    error on stderr); the other refusals run main in this process (refused_eval)."""
    result = failed_eval("env.num_envs=32", tmp_path)
    assert "env.num_envs=32: python -m rlinf_embodied.eval steps eval.num_envs envs in parallel" in result.stderr


@pytest.mark.parametrize(
    "name, message",
    [
        ("gpu", r"eval.device='gpu' is not a device; valid: 'auto', 'cpu', 'cuda' or 'cuda:N'"),  # was torch's own
        ("mps", r"eval.device='mps' is not a device this package runs on"),
        ("cuda:99", r"eval.device='cuda:99', but (PyTorch sees no CUDA GPU|this machine has \d+ CUDA GPU)"),
    ],
)
def test_eval_device_names_the_setting_and_the_valid_devices(name, message):
    """Before: 'gpu' was torch's 'Expected one of cpu, cuda, ipu, xpu, ...' and 'cuda:3' on a machine without CUDA
    an AssertionError ('Torch not compiled with CUDA enabled'), neither naming eval.device."""
    from rlinf_embodied.runners.evaluator import pick_device

    with pytest.raises(ValueError, match=message):
        pick_device(name, "eval.device")
    assert pick_device("cpu", "eval.device") == torch.device("cpu")


def test_eval_without_a_checkpoint_is_refused_before_any_episode(tmp_path, monkeypatch, capsys):
    """Before: `python -m rlinf_embodied.eval` without policy.checkpoint scored a randomly initialised policy."""
    stderr = refused_eval(monkeypatch, capsys, "eval.num_episodes=8", f"hydra.run.dir={tmp_path}")
    assert "python -m rlinf_embodied.eval needs policy.checkpoint=<a policy directory" in stderr
    assert "eval rlinf" not in stderr  # no episode ran (the progress bar; refused_eval fails on one too)


def test_eval_checks_the_policy_settings_before_building_the_env(tmp_path, monkeypatch, capsys):
    """Before: `eval policy.size=huge` built the env, then failed with KeyError: 'huge'."""
    stderr = refused_eval(monkeypatch, capsys, "policy.size=huge", f"hydra.run.dir={tmp_path}", before="env")
    assert "policy.size='huge' is not a size of policy 'mlp'; valid: ['default', 'tiny']" in stderr


def test_eval_refuses_an_output_dir_it_cannot_create_before_any_episode(tmp_path, checkpoint, monkeypatch, capsys):
    """Before: results.json was written after every episode had run, so an unwritable eval.output_dir failed at
    the end with os.makedirs' error, which names no setting."""
    (tmp_path / "a_file").write_text("")
    bad = tmp_path / "a_file" / "results"
    overrides = (f"eval.output_dir={bad}", f"policy.checkpoint={checkpoint}", f"hydra.run.dir={tmp_path}")
    stderr = refused_eval(monkeypatch, capsys, *overrides)
    assert f"eval.output_dir='{bad}' cannot be created (Not a directory): give a writable directory" in stderr
    assert "eval rlinf" not in stderr  # no episode ran (the progress bar; refused_eval fails on one too)


def test_eval_refuses_an_output_dir_holding_an_earlier_evaluations_results(tmp_path, checkpoint, monkeypatch, capsys):
    """Before: `eval eval.output_dir=<dir with a results.json>` overwrote the earlier results (and videos) without a
    word. Refused before Hydra writes into its run directory (hydra.run.dir=<that dir> leaves it as it was), and by
    the entry point itself where Hydra's callback does not run; a new eval.output_dir runs."""
    import logging
    import re

    from rlinf_embodied import eval as eval_entry
    from rlinf_embodied.paths import refuse_earlier_results

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "results.json").write_text('{"overall_success_rate": 0.5}')
    message = f"eval.output_dir='{earlier}' already holds an earlier evaluation's results.json"
    with pytest.raises(FileExistsError, match=re.escape(message) + r".*give a new directory \(eval.output_dir=<new"):
        refuse_earlier_results(str(earlier), "eval.output_dir")
    refuse_earlier_results(str(tmp_path / "new"), "eval.output_dir")
    monkeypatch.setattr(
        "rlinf_embodied.runners.evaluator.evaluate_policy", lambda *args, **kwargs: pytest.fail("the evaluation ran")
    )
    checkpoint_setting = f"policy.checkpoint={checkpoint}"
    without_callback = "~hydra.callbacks.output_dir"  # the entry point's own refusal
    for overrides in (
        [f"eval.output_dir={earlier}", f"hydra.run.dir={tmp_path / 'hydra'}"],
        [f"hydra.run.dir={earlier}"],  # the output dir is Hydra's run directory
        [f"eval.output_dir={earlier}", f"hydra.run.dir={tmp_path / 'hydra_written'}", without_callback],
    ):
        monkeypatch.setattr(sys, "argv", ["eval", checkpoint_setting, *overrides])
        handlers = list(logging.getLogger().handlers)
        try:
            with pytest.raises(SystemExit):
                eval_entry.main()
        finally:
            for handler in set(logging.getLogger().handlers) - set(handlers):
                logging.getLogger().removeHandler(handler)
                handler.close()
        error = capsys.readouterr().err
        assert message in error and "eval.output_dir=<new dir>" in error
    assert sorted(os.listdir(earlier)) == ["results.json"] and not (tmp_path / "hydra").exists()
    assert (earlier / "results.json").read_text() == '{"overall_success_rate": 0.5}'


def test_eval_task_ids_on_a_single_task_env_names_the_suites(tmp_path, checkpoint):
    """Before: eval.task_ids=[0,1] on rlinf/ManiSkill-PickCube failed inside ManiSkill ("unexpected keyword
    argument 'task_id'"), naming neither the setting nor where task ids apply."""
    with pytest.raises(ValueError, match=r"eval.task_ids=\[0, 1\] picks tasks of a suite \(\[.*'rlinf/LIBERO-10'"):
        evaluate_policy(
            EnvConfig(id=TOY_ID, obs_mode="rgb"),
            PolicyConfig(name="mlp", checkpoint=checkpoint),
            EvalConfig(num_episodes=1, num_envs=1, task_ids=[0, 1], video=False),
            str(tmp_path),
        )


class _ScriptedEpisodes:
    """Two envs: env 0's episodes last 1 step and succeed, env 1's last 4 steps and fail."""

    num_envs = 2

    def __init__(self):
        self.steps = 0

    def reset(self, seed=None):
        return {"state": torch.zeros(2, 4)}, {}

    def step(self, actions):
        self.steps += 1
        ended = torch.tensor([True, self.steps % 4 == 0])
        episode = {
            "return": torch.tensor([1.0, 0.0]),
            "length": torch.tensor([1.0, 4.0]),
            "success_once": torch.tensor([1.0, 0.0]),
            "success": torch.tensor([1.0, 0.0]),
        }
        return (
            {"state": torch.zeros(2, 4)},
            torch.zeros(2),
            ended,
            torch.zeros(2, dtype=torch.bool),
            {
                "episode": episode,
                "_episode": ended,
            },
        )


class _ZeroPolicy:
    def act(self, obs, deterministic=True):
        return type("Out", (), {"actions": torch.zeros(obs["state"].shape[0], 2)})()


def test_each_env_plays_its_share_so_quick_successes_do_not_crowd_out_slow_failures():
    """Counting the first num_episodes episodes to end would count env 0's four 1-step successes (100%)."""
    from rlinf_embodied.runners.evaluator import _run_task, episode_quotas

    assert episode_quotas(200, 16) == [13] * 8 + [12] * 8
    result = _run_task(_ScriptedEpisodes(), _ZeroPolicy(), EvalConfig(num_episodes=4, num_envs=2), None, "toy", "cpu")
    assert (result.episodes, result.successes, result.mean_length) == (4, 2, 2.5)


def test_more_envs_than_episodes_is_refused():
    with pytest.raises(ValueError, match=r"eval.num_envs=64 > eval.num_episodes=8: .*56 envs would play none"):
        EvalConfig(num_episodes=8, num_envs=64)


def test_eval_video_envs_unset_fits_fewer_envs():
    assert EvalConfig(num_episodes=2, num_envs=2).video_envs is None  # the recorder then tiles min(4, 2) envs


def test_eval_task_ids_are_checked_before_any_task_plays():
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.runners.evaluator import eval_tasks

    cfg = compose_config("eval", ["env=libero", "eval.task_ids=[0,12]"])  # LIBERO-Spatial has tasks 0..9
    with pytest.raises(ValueError, match=r"eval.task_ids=\[0, 12\]: task_id=12 is out of range .*0..9"):
        eval_tasks(cfg.eval, cfg.env)  # before: task 0's episodes ran, then task 12's env failed to build
    cfg = compose_config("eval", ["env=libero", "eval.task_ids=[9,0]"])
    assert eval_tasks(cfg.eval, cfg.env) == [9, 0]


class _LosesItAtTheEnd(_ScriptedEpisodes):
    """env 1's episodes succeed at some step but no longer at their last: success_once 1, success 0."""

    def step(self, actions):
        obs, reward, terminated, truncated, info = super().step(actions)
        info["episode"]["success_once"] = torch.tensor([1.0, 1.0])
        return obs, reward, terminated, truncated, info


def test_success_at_the_final_step_is_counted_apart_from_success_at_any_step():
    from rlinf_embodied.runners.evaluator import _run_task
    from rlinf_embodied.workers.sft_worker import eval_metrics

    eval_cfg = EvalConfig(num_episodes=4, num_envs=2)
    slipping = _run_task(_LosesItAtTheEnd(), _ZeroPolicy(), eval_cfg, None, "toy", "cpu")
    assert (slipping.episodes, slipping.successes, slipping.successes_at_end) == (4, 4, 2)
    holding = _run_task(_ScriptedEpisodes(), _ZeroPolicy(), eval_cfg, None, "toy", "cpu")
    assert (holding.successes, holding.successes_at_end) == (2, 2)
    metrics = eval_metrics([slipping, holding])  # SFT's eval/*, named as training's
    assert (metrics["eval/success_once"], metrics["eval/success_rate"], metrics["eval/num_episodes"]) == (0.75, 0.5, 8)


def test_table_and_results_name_success_at_any_step_and_at_the_end_apart(tmp_path, capsys):
    """Before: one "success rate" column and results.json key, holding success at any step (success_once), while
    training's success_rate is success at the final step: a policy that reached the goal and drifted off scored
    high here and low in training's eval/success_rate under the same name."""
    from rlinf_embodied.runners.evaluator import TaskResult, write_results

    drifting = TaskResult("toy", episodes=4, successes=3, mean_return=1.0, mean_length=5.0, successes_at_end=1)
    payload = json.loads(open(write_results([drifting], str(tmp_path), deterministic=False)).read())
    (task,) = payload["tasks"]
    assert (task["success_once_rate"], task["success_at_end_rate"], task["success_rate"]) == (0.75, 0.25, 0.75)
    assert (payload["overall_success_once_rate"], payload["overall_success_at_end_rate"]) == (0.75, 0.25)
    assert "success_at_end_rate" in payload["success_rate_means"] and payload["deterministic"] is False
    print_success_table([drifting])
    header, toy_row = [line for line in capsys.readouterr().out.splitlines() if "success" in line or "toy" in line]
    cells = [cell.strip() for cell in toy_row.split("│") if cell.strip()]
    assert cells[:4] == ["toy", "4", "75.0%", "25.0%"]
    assert header.index("success (any step)") < header.index("success at end")


class _OvershootsOneDim(_ZeroPolicy):
    """Action dim 0 at 2.0, beyond the toy env's [-1, 1] box: half of every action's elements are clipped."""

    def act(self, obs, deterministic=True):
        actions = torch.zeros(obs["state"].shape[0], 2)
        actions[:, 0] = 2.0
        return type("Out", (), {"actions": actions})()


def test_the_evaluation_reports_the_fraction_of_action_elements_the_env_clipped(tmp_path, capsys):
    """Before: training's eval/clipped_action_fraction existed but the standalone evaluation (and SFT's) dropped
    the env's info["action_clipped"], so a checkpoint whose actions overshoot the env's bounds looked clean."""
    from rlinf_embodied.runners.evaluator import TaskResult, _run_task, write_results
    from rlinf_embodied.workers.sft_worker import eval_metrics

    env = make_toy_vector_env(2, obs_mode="state", max_episode_steps=3)
    try:
        eval_cfg = EvalConfig(num_episodes=2, num_envs=2)
        overshooting = _run_task(env, _OvershootsOneDim(), eval_cfg, None, "toy", "cpu")
        clean = _run_task(env, _ZeroPolicy(), eval_cfg, None, "toy", "cpu")
    finally:
        env.close()
    assert (overshooting.clipped_action_fraction, clean.clipped_action_fraction) == (0.5, 0.0)
    assert eval_metrics([overshooting, clean])["eval/clipped_action_fraction"] == 0.25
    silent = TaskResult("no report", episodes=2, successes=0, mean_return=0.0, mean_length=3.0)
    payload = json.loads(open(write_results([overshooting, silent], str(tmp_path))).read())
    assert [task.get("clipped_action_fraction") for task in payload["tasks"]] == [0.5, None]
    assert payload["clipped_action_fraction"] == 0.5  # over the tasks whose env reported it
    print_success_table([overshooting, silent])
    out = capsys.readouterr().out
    assert "clipped actions" in out
    rows = [line for line in out.splitlines() if "toy" in line or "no report" in line]
    assert [row.split("│")[-2].strip() for row in rows] == ["50.00%", "-"]
    print_success_table([silent])  # no env reported it: no column
    assert "clipped actions" not in capsys.readouterr().out


class _RecordsRandomActions(_ZeroPolicy):
    """Acts with torch's global RNG, as the policies sample; remembers every action."""

    def __init__(self):
        self.actions = []

    def act(self, obs, deterministic=True):
        actions = torch.randn(obs["state"].shape[0], 2)
        self.actions.append(actions)
        return type("Out", (), {"actions": actions})()


def test_a_stochastic_evaluation_samples_from_eval_seed():
    """Before: eval.deterministic=false with the same eval.seed gave different results (only the envs were seeded)."""
    from rlinf_embodied.runners.evaluator import _run_task

    def played(seed):
        policy = _RecordsRandomActions()
        cfg = EvalConfig(num_episodes=4, num_envs=2, deterministic=False, seed=seed)
        _run_task(_ScriptedEpisodes(), policy, cfg, None, "toy", "cpu")
        return torch.stack(policy.actions)

    torch.manual_seed(1)
    first = played(7)
    outside = torch.rand(1)  # the caller's stream: restored after the evaluation
    torch.manual_seed(2)
    again = played(7)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, played(8))
    torch.manual_seed(2)
    played(7)
    torch.manual_seed(1)
    played(7)
    assert torch.equal(torch.rand(1), outside)


def test_eval_progress_false_hides_the_bar(capsys):
    """eval.progress=false (as runner.progress): no tqdm bar, whose carriage returns fill a piped log."""
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.runners.evaluator import _run_task

    assert compose_config("eval", ["eval.progress=false"]).eval.progress is False  # a command-line setting
    for progress in (True, False):
        cfg = EvalConfig(num_episodes=4, num_envs=2, progress=progress)
        _run_task(_ScriptedEpisodes(), _ZeroPolicy(), cfg, None, "toy", "cpu")
        shown = "eval toy" in capsys.readouterr().err
        assert shown == progress


@pytest.mark.parametrize("seed, num_envs", [(4294967295, 2), (4294967290, 8)])
def test_eval_seed_beyond_the_simulators_range_is_refused_before_any_env(tmp_path, checkpoint, seed, num_envs):
    """Before: accepted, then reset's error after the env and the policy had been built."""
    from rlinf_embodied.runners.evaluator import check_eval_seed

    cfg = EvalConfig(num_episodes=8, num_envs=num_envs, seed=seed, video=False)
    message = (
        rf"eval.seed={seed}: env i's first episode is seeded eval.seed \+ i, up to .* = {seed + num_envs - 1}, "
        rf"above the largest seed 4294967295; valid with eval.num_envs={num_envs}: 0 <= eval.seed <= "
        rf"{4294967295 - num_envs + 1}"
    )
    with pytest.raises(ValueError, match=message):
        check_eval_seed(cfg)
    with pytest.raises(ValueError, match=message):
        evaluate_policy(EnvConfig(id="no/SuchEnv"), PolicyConfig(name="mlp", checkpoint=checkpoint), cfg, str(tmp_path))
    check_eval_seed(EvalConfig(num_episodes=8, num_envs=num_envs, seed=4294967295 - num_envs + 1))


def _evaluate_on_the_toy_env(checkpoint, output_dir) -> list:
    """Two episodes of an mlp checkpoint on the toy env (state 4 wide, actions in [-1, 1]^2)."""
    return evaluate_policy(
        EnvConfig(id=TOY_ID, obs_mode="rgb", max_episode_steps=2),
        PolicyConfig(name="mlp", checkpoint=str(checkpoint)),
        EvalConfig(num_episodes=2, num_envs=2, video=False),
        str(output_dir),
    )


def test_a_checkpoint_of_another_state_width_is_refused_before_any_episode(tmp_path):
    """Before: the envs were built and the progress bar started, then the mlp's shape error in the first act."""
    path = tmp_path / "policy5"
    make_policy("mlp", size="tiny", action_dim=2, state_dim=5).save_pretrained(path)  # the toy env's state is 4 wide
    with pytest.raises(
        ValueError,
        match=r"policy.checkpoint='.*policy5' reads state observations of width state_dim=5 \(its config.json\), but "
        r"env 'rlinf-test/ToyReachRGB' gives state_dim=4; evaluate it on an env",
    ):
        _evaluate_on_the_toy_env(path, tmp_path / "eval")
    assert not (tmp_path / "eval" / "results.json").exists()


def test_gaussian_action_bounds_beyond_the_envs_action_space_are_refused(tmp_path):
    """Before: mlp bounds [-2, 2] on a [-1, 1] action space were accepted, and the env clipped half of each range."""
    path = tmp_path / "wide"
    make_policy(
        "mlp", size="tiny", action_dim=2, state_dim=4, action_low=[-2.0, -1.0], action_high=[2.0, 0.5]
    ).save_pretrained(path)
    with pytest.raises(
        ValueError,
        match=r"action_low=\[-2.0, -1.0\], action_high=\[2.0, 0.5\] reach beyond env 'rlinf-test/ToyReachRGB''s "
        r"action space low=\[-1.0, -1.0\], high=\[1.0, 1.0\] in dimensions \[0\]",
    ):
        _evaluate_on_the_toy_env(path, tmp_path / "eval")
    narrow = tmp_path / "narrow"  # inside the space: evaluated
    make_policy(
        "mlp", size="tiny", action_dim=2, state_dim=4, action_low=[-0.5, -1.0], action_high=[0.5, 1.0]
    ).save_pretrained(narrow)
    assert _evaluate_on_the_toy_env(narrow, tmp_path / "eval")[0].episodes == 2


@pytest.mark.parametrize(
    "overrides, deterministic, message",
    [
        (
            {"init_log_std": -3.0},
            True,
            r"policy.overrides.init_log_std=-3.0 would change nothing: .*eval.deterministic=true",
        ),
        (
            {"noise_level": 0.05},
            True,
            r"policy.overrides.noise_level=0.05 would change nothing: .*set eval.deterministic=false",
        ),
        ({"temperature": 0.5}, True, r"policy.overrides.temperature=0.5 would change nothing"),
        (
            {"deterministic_seed": 3},
            False,
            r"policy.overrides.deterministic_seed=3 would change nothing: only a deterministic",
        ),
    ],
)
def test_sampling_overrides_are_refused_where_the_evaluation_does_not_sample(overrides, deterministic, message):
    """Before: eval with policy.overrides.init_log_std=-3.0 (or a flow noise_level) printed the same table as without:
    the default eval.deterministic=true acts with the mean."""
    from rlinf_embodied.eval import reject_sampling_overrides

    with pytest.raises(ValueError, match=message):
        reject_sampling_overrides(overrides, deterministic)
    reject_sampling_overrides(overrides, not deterministic)  # the other mode reads them


def test_eval_refuses_a_sampling_override_of_a_deterministic_evaluation_before_any_episode(
    tmp_path, checkpoint, monkeypatch, capsys
):
    overrides = ("policy.overrides.init_log_std=-3.0", f"policy.checkpoint={checkpoint}", f"hydra.run.dir={tmp_path}")
    stderr = refused_eval(monkeypatch, capsys, *overrides)
    assert "policy.overrides.init_log_std=-3.0 would change nothing" in stderr
    assert "eval rlinf" not in stderr  # no episode ran (the progress bar; refused_eval fails on one too)


def test_eval_refuses_an_architecture_override_of_the_checkpoint_before_any_episode(
    tmp_path, checkpoint, monkeypatch, capsys
):
    """Before: the checkpoint failed to load in the policy's build, naming a tensor ("actor.0.bias has shape
    (32,), this mlp config needs (128,)"), after the envs were built."""
    overrides = ("policy.overrides.hidden_dim=128", f"policy.checkpoint={checkpoint}", f"hydra.run.dir={tmp_path}")
    stderr = refused_eval(monkeypatch, capsys, *overrides)
    assert (
        f"policy.overrides.hidden_dim=128: policy.checkpoint='{checkpoint}' was trained with hidden_dim=32 (its "
        "config.json), which sets the shapes of its weights" in stderr
    )
    assert "eval rlinf" not in stderr


def test_eval_refuses_an_output_dir_it_cannot_write_before_any_env(tmp_path, checkpoint, monkeypatch, capsys):
    """Before: an existing directory that cannot be written failed in the log handler ("No such file or directory:
    '/proc/sys/eval.log'"), and a regular file read "cannot be created (File exists)"."""
    from rlinf_embodied.paths import make_output_dir

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(NotADirectoryError, match=rf"eval.output_dir='{a_file}' is a file, not a directory"):
        make_output_dir(str(a_file), "eval.output_dir")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    unwritable = [str(read_only)] if not os.access(read_only, os.W_OK) else []  # root may write anyway
    unwritable += ["/proc/sys"] if os.path.isdir("/proc/sys") else []
    if not unwritable:
        pytest.skip("no directory this user cannot write")
    with pytest.raises(PermissionError, match=rf"eval.output_dir='{unwritable[0]}' is not writable .*give a writable"):
        make_output_dir(unwritable[0], "eval.output_dir")
    overrides = (f"eval.output_dir={unwritable[0]}", f"policy.checkpoint={checkpoint}", f"hydra.run.dir={tmp_path}")
    stderr = refused_eval(monkeypatch, capsys, *overrides, before="env")
    assert f"eval.output_dir='{unwritable[0]}' is not writable" in stderr
    read_only.chmod(0o700)


def test_eval_task_ids_with_a_given_env_task_id_are_refused(monkeypatch, capsys, tmp_path):
    """Before: eval.task_ids replaced env.kwargs.task_id silently (the run scored other tasks than the one given).
    The env group's own default (LIBERO's task_id: 0) is no choice of the user's: eval.task_ids alone plays."""
    from rlinf_embodied.eval import reject_task_id_with_task_ids

    stderr = refused_eval(
        monkeypatch, capsys, "env=libero", "env.kwargs.task_id=3", "eval.task_ids=[0]", f"hydra.run.dir={tmp_path}"
    )
    assert "env.kwargs.task_id=3 and eval.task_ids=[0] both pick the tasks" in stderr, stderr[-2000:]
    reject_task_id_with_task_ids(["env=libero", "eval.seed=5"], EvalConfig(num_episodes=1, num_envs=1, task_ids=[0]))
    reject_task_id_with_task_ids(["env.kwargs.task_id=3"], EvalConfig(num_episodes=1, num_envs=1))


def test_a_suites_task_is_named_by_env_kwargs_task_id_where_eval_task_ids_is_unset():
    """Before: a sweep over env.kwargs.task_id wrote tables and results.json that all read "rlinf/LIBERO-Spatial"."""
    from rlinf_embodied.runners.evaluator import shown_task_id, task_label

    libero = EnvConfig(id="rlinf/LIBERO-Spatial", num_envs=2, obs_mode="rgb", kwargs={"task_id": 3})
    assert task_label(libero.id, shown_task_id(libero, None)) == "rlinf/LIBERO-Spatial[task 3]"
    assert task_label(libero.id, shown_task_id(libero, 5)) == "rlinf/LIBERO-Spatial[task 5]"  # eval.task_ids' own
    libero.kwargs["task_id"] = [0, 1]  # one task per env
    assert task_label(libero.id, shown_task_id(libero, None)) == "rlinf/LIBERO-Spatial[tasks 0,1]"
    del libero.kwargs["task_id"]
    assert task_label(libero.id, shown_task_id(libero, None)) == "rlinf/LIBERO-Spatial"
    single = EnvConfig(id="rlinf/ManiSkill-PickCube", num_envs=2)
    assert task_label(single.id, shown_task_id(single, None)) == "rlinf/ManiSkill-PickCube"


def test_more_env_worker_processes_than_eval_num_envs_is_refused_before_any_env(tmp_path, checkpoint):
    """Before: the vector env's error ("num_workers=8 > num_envs=4") named neither env.kwargs.num_workers nor
    eval.num_envs (the env group's env.num_envs is 8, so the 4 puzzled)."""
    env_cfg = EnvConfig(id=TOY_ID, num_envs=8, obs_mode="rgb", kwargs={"num_workers": 8})
    eval_cfg = EvalConfig(num_episodes=4, num_envs=4)
    with pytest.raises(
        ValueError, match=r"env.kwargs.num_workers=8 > the 4 envs of the evaluation \(eval.num_envs=4\)"
    ):
        evaluate_policy(env_cfg, PolicyConfig(name="mlp", checkpoint=checkpoint), eval_cfg, str(tmp_path / "eval"))
    assert not (tmp_path / "eval").exists()


def test_a_per_env_task_list_of_another_length_than_eval_num_envs_is_refused_naming_both():
    """Probe 63 #14: before, LIBERO's vector env said "task_id got 2 entries for num_envs=4", naming neither
    env.kwargs.task_id nor eval.num_envs."""
    from rlinf_embodied.runners.evaluator import check_eval_workers

    env_cfg = EnvConfig(id="rlinf/LIBERO-Spatial", num_envs=8, kwargs={"task_id": [0, 1]})
    with pytest.raises(
        ValueError,
        match=r"env.kwargs.task_id=\[0, 1\] gives one task per env, 2 for the 4 envs of the evaluation "
        r"\(eval.num_envs=4\): give 4 task ids",
    ):
        check_eval_workers(env_cfg, 4, "eval.num_envs=4")
    check_eval_workers(env_cfg, 2, "eval.num_envs=2")
    check_eval_workers(env_cfg, 4, "eval.num_envs=4", tasks_from_env=False)  # eval.task_ids replaces the list
    check_eval_workers(EnvConfig(id="rlinf/LIBERO-Spatial", kwargs={"task_id": 3}), 4, "eval.num_envs=4")
