"""The benchmark scripts refuse bad arguments at once, by name (argparse errors, exit 2), instead of a traceback, a
nonsense table or minutes of work first; and they report failures rather than hang or exit 0. Nothing here runs a
benchmark: each test stops at argument parsing or drives a script's pieces with stand-ins."""

import importlib.util
import multiprocessing
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    """benchmarks/<name>.py as a module registered in sys.modules (its dataclasses need that: ppo_baseline), under a
    prefixed name so that generic names (startup, channel) shadow nothing."""
    key = f"benchmark_args_test_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]


def refused(capsys, call, *argv) -> str:
    """Runs call(list(argv)), expects an argparse error (exit 2) and returns its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        call(list(argv))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# ---- 13: counts and sizes must be >= 1 (one shared argparse type) ------------------------------------------------
NEGATIVE_COUNTS = [
    ("action_noise_sensitivity", ["ckpt", "--episodes", "-1"], "--episodes"),
    ("env_throughput", ["--steps", "-1"], "--steps"),
    ("env_throughput", ["--num-envs", "-1"], "--num-envs"),
    ("vector_overhead", ["--steps", "-1", "--num-envs", "1"], "--steps"),
    ("vector_overhead", ["--num-envs", "-1"], "--num-envs"),
    ("vision_shortcut", ["--steps", "-1"], "--steps"),
    ("env_startup", ["--envs", "-1"], "--envs"),
    ("channel", ["--items", "-5"], "--items"),
    ("flow_step_kl", ["--batch", "-1"], "--batch"),
    ("policy_inference", ["--batch-sizes", "8", "-1"], "--batch-sizes"),
    ("startup", ["--repeats", "-1"], "--repeats"),
    ("failure_stages", ["ckpt", "--max-steps", "0"], "--max-steps"),
    ("chunk_observation", ["--num-envs", "0"], "--num-envs"),
    ("sft_throughput", ["--batch-sizes", "0"], "--batch-sizes"),
    ("vla_ratio_check", ["--iterations", "0"], "--iterations"),
    ("ppo_baseline", ["--num-envs", "-1"], "--num-envs"),
    ("dataset_writer", ["--episodes", "-1"], "--episodes"),
    ("pipeline", ["--num-envs", "0"], "--num-envs"),
    ("weight_copy", ["--repeats", "-1"], "--repeats"),
    ("weight_sync", ["--repeats", "0"], "--repeats"),
    ("sft_eval_overlap", ["--steps", "-1"], "--steps"),
]


@pytest.mark.parametrize("script, argv, flag", NEGATIVE_COUNTS, ids=[f"{s}{f}" for s, _, f in NEGATIVE_COUNTS])
def test_a_count_below_one_is_an_argparse_error_naming_the_flag(capsys, script, argv, flag):
    module = load(script)
    call = module.parse_args if script == "ppo_baseline" else module.main
    err = refused(capsys, call, *argv)
    bad = next(value for value in argv[argv.index(flag) + 1 :] if int(value) < 1)
    assert f"argument {flag}: must be an integer >= 1, got '{bad}'" in err


def test_offload_refuses_a_size_that_is_not_positive(capsys):
    assert "argument --gb: must be a number > 0, got '-1'" in refused(capsys, load("offload").main, "--gb", "-1")


def test_the_shared_types_accept_good_values_and_name_bad_ones():
    import argparse

    bench_args = load("bench_args")
    assert bench_args.positive_int("3") == 3 and bench_args.non_negative_int("0") == 0
    assert bench_args.positive_float("0.05") == 0.05
    for parse, text in [
        (bench_args.positive_int, "0"),
        (bench_args.positive_int, "x"),
        (bench_args.positive_float, "nan"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    assert [bench_args.strict_bool(t) for t in ("true", "False", "1", "no")] == [True, False, True, False]


# ---- 9: env_startup.py notices a dead child at once and prints its error ------------------------------------------
def test_env_startup_refuses_an_unknown_obs_mode(capsys):
    assert "invalid choice: 'foo'" in refused(capsys, load("env_startup").main, "--obs-mode", "foo")


def failing_build(num_envs, obs_mode, freeze, queue):
    raise RuntimeError("obs_mode='rgb' needs a Vulkan render device")


def test_env_startup_reports_the_childs_error_without_waiting(monkeypatch):
    module = load("env_startup")
    fork = multiprocessing.get_context("fork")
    monkeypatch.setattr(module, "build_envs", wrap_child(failing_build))
    monkeypatch.setattr(module.mp, "get_context", lambda method: fork)
    with pytest.raises(SystemExit, match="failed in the child:(.|\n)*needs a Vulkan render device"):
        module.seconds_to_build(1, "rgb", freeze=False)


def wrap_child(function):
    """build_envs' own error handling around `function` (so the child reports ("error", traceback))."""
    module = load("env_startup")

    def child(num_envs, obs_mode, freeze, queue):
        try:
            function(num_envs, obs_mode, freeze, queue)
        except BaseException:
            queue.put(("error", module.traceback.format_exc()))
            raise SystemExit(1)

    return child


def test_env_startup_notices_a_child_that_died_silently():
    module = load("env_startup")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=os._exit, args=(3,))
    process.start()
    with pytest.raises(RuntimeError, match="exited with code 3 before reporting"):
        module.wait_for_child(process, queue, timeout_s=60, poll_s=0.05)
    process.join()


# ---- 10: chunk_observation.py's state run passes no camera size ---------------------------------------------------
def test_chunk_observation_passes_a_camera_size_only_for_rgb(monkeypatch):
    module = load("chunk_observation")
    seen = []

    class Stop(Exception):
        pass

    def make_vec(*args, **kwargs):
        seen.append(kwargs)
        raise Stop

    monkeypatch.setattr(module.gym, "make_vec", make_vec)
    args = module.parse_args(["--obs-mode", "state", "--num-envs", "8", "--chunk", "8"])
    for obs_mode in ("state", "rgb"):
        with pytest.raises(Stop):
            module.measure(args, obs_mode, 8)
    assert "camera_size" not in seen[0] and seen[0]["obs_mode"] == "state"
    assert seen[1]["camera_size"] == 96 and seen[1]["obs_mode"] == "rgb"


def test_chunk_observation_refuses_an_unknown_obs_mode(capsys):
    assert "invalid choice: 'depth'" in refused(capsys, load("chunk_observation").parse_args, "--obs-mode", "depth")


# ---- 11: ppo_baseline.py reads booleans strictly and refuses a batch smaller than its minibatch count -------------
@pytest.mark.parametrize("flag, value", [("--ignore-terminations", "maybe"), ("--save-model", "no-thanks"),
                                         ("--stop-at-target", "ture")])  # fmt: skip
def test_ppo_baseline_refuses_a_boolean_that_is_not_true_or_false(capsys, flag, value):
    err = refused(capsys, load("ppo_baseline").parse_args, flag, value)
    assert f"argument {flag}: expected true or false, got '{value}'" in err


def test_ppo_baseline_reads_true_and_false_and_keeps_zero_eval_interval():
    args = load("ppo_baseline").parse_args(
        ["--stop-at-target", "true", "--save-model", "False", "--eval-interval", "0"]
    )
    assert args.stop_at_target is True and args.save_model is False and args.eval_interval == 0


def test_ppo_baseline_refuses_a_batch_smaller_than_the_minibatch_count(capsys):
    err = refused(capsys, load("ppo_baseline").parse_args, "--num-envs", "1", "--num-steps", "4")
    assert "1 x 4 = 4 is smaller than --num-minibatches=8" in err


# ---- 12: placement_accuracy.py refuses bad counts before profiling ------------------------------------------------
@pytest.mark.parametrize("flag, value, minimum", [("--iterations", "-1", 1), ("--rounds", "0", 1),
                                                  ("--max-layouts", "-1", 0)])  # fmt: skip
def test_placement_accuracy_refuses_bad_counts_before_any_work(capsys, flag, value, minimum):
    err = refused(capsys, load("placement_accuracy").main, flag, value)
    assert f"argument {flag}: must be an integer >= {minimum}, got '{value}'" in err


# ---- 14: sft_throughput.py checks --size against the policy's presets ---------------------------------------------
def test_sft_throughput_refuses_an_unknown_size_and_lists_the_valid_ones(capsys):
    err = refused(capsys, load("sft_throughput").parse_args, "--policy", "pi0", "--size", "nosuch")
    assert "--size nosuch: not a preset of pi0; valid: ['tiny', 'pi0-small']" in err


def test_sft_throughput_refuses_a_checkpoint_only_size_and_a_policy_without_images(capsys):
    module = load("sft_throughput")
    assert "completed from a checkpoint" in refused(capsys, module.parse_args, "--size", "pi0-3b")
    assert "--policy mlp: none of its presets" in refused(capsys, module.parse_args, "--policy", "mlp")
    assert "unknown policy 'nosuch'" in refused(capsys, module.parse_args, "--policy", "nosuch")


def test_sft_throughput_defaults_the_size_per_policy():
    module = load("sft_throughput")
    assert module.parse_args([]).size == "pi0-small"  # the documented default
    assert module.parse_args(["--policy", "openvla_oft"]).size == "openvla-oft-small"
    assert module.parse_args(["--policy", "openvla"]).size == "tiny"
    assert module.parse_args(["--policy", "pi0", "--size", "tiny"]).size == "tiny"


# ---- 15: vla_ratio_check.py exits non-zero when no run succeeded --------------------------------------------------
def test_vla_ratio_check_refuses_an_unknown_policy_or_size(capsys):
    module = load("vla_ratio_check")
    assert "unknown policy 'nosuch'" in refused(capsys, module.main, "--policies", "nosuch", "--simulate-gpus")
    assert "pi0 has no size 'big'" in refused(capsys, module.main, "--policies", "pi0:big")


def test_vla_ratio_check_fails_when_every_run_failed(monkeypatch, tmp_path):
    module = load("vla_ratio_check")
    monkeypatch.setattr(module, "run_one", lambda *args: ([], 0.1, "ValueError: no GPU"))
    with pytest.raises(SystemExit, match=r"every run failed \(2 of 2"):
        module.main(["--policies", "pi0:tiny", "mlp:tiny", "--output", str(tmp_path)])


def test_vla_ratio_check_keeps_exit_zero_when_a_run_succeeded(monkeypatch, tmp_path, capsys):
    module = load("vla_ratio_check")
    results = iter([([{"iteration": 1}], 0.1, ""), ([], 0.1, "boom")])
    monkeypatch.setattr(module, "run_one", lambda *args: next(results))
    module.main(["--policies", "pi0:tiny", "mlp:tiny", "--output", str(tmp_path)])
    assert "1 of 2 runs failed: mlp:tiny" in capsys.readouterr().err
