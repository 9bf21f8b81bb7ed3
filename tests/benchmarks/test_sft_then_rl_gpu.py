"""The GPU recipe's shell stages (benchmarks/sft_then_rl_gpu.sh) on CPU: `pick` and `reached`, which choose between
SFT runs, on fake metrics, the `noise` pick, and the `sft` and `rl` stages' arguments against the config checks
(pi0 and OpenVLA-OFT).

A wrong choice or a rejected argument here costs a whole device session."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sft_then_rl_gpu.sh"


def write_run(work: Path, name: str, evals: dict[int, float]) -> None:
    run = work / name
    for step in evals:
        (run / "checkpoints" / f"step_{step:06d}" / "policy").mkdir(parents=True)
    rows = [{"step": step, "sft/loss": 0.1} for step in evals]
    rows += [{"step": step, "eval/success_once": success} for step, success in evals.items()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def script_env(**env_vars: str) -> dict[str, str]:
    """The script's environment: this interpreter as its $PYTHON (`python3` on PATH may lack the package: under
    .venv/bin/pytest without an activated venv every stage failed with ModuleNotFoundError)."""
    return {**os.environ, "PYTHON": sys.executable, **env_vars}


def stage(work: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = script_env(WORK=str(work), **env_vars)
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False)


def test_pick_takes_the_best_in_range_across_seeds(tmp_path):
    write_run(tmp_path, "sft_0", {1000: 0.05, 2000: 0.25})
    write_run(tmp_path, "sft_1", {1000: 0.45, 2000: 0.80})  # 0.80 is above the few-shot range
    write_run(tmp_path, "sft_2", {1000: 0.10})
    result = stage(tmp_path, "pick")
    assert result.returncode == 0, result.stderr
    path, success = result.stdout.split()
    assert path == f"{tmp_path}/sft_1/checkpoints/step_001000/policy" and float(success) == 0.45


def test_reached_is_true_once_any_run_evaluates_at_the_bar(tmp_path):
    write_run(tmp_path, "sft_0", {1000: 0.05})
    write_run(tmp_path, "sft_1", {1000: 0.20})
    assert stage(tmp_path, "reached", "0.3").returncode == 1
    write_run(tmp_path, "sft_2", {1000: 0.31})
    assert stage(tmp_path, "reached", "0.3").returncode == 0


def test_the_stages_run_the_python_the_caller_names(tmp_path):
    """Before: the scripts ran `python3` from PATH, so `.venv/bin/pytest` without an activated venv ran the stages
    with a python that lacks the package. A `python3` on PATH that fails must not be used when $PYTHON is set."""
    import re

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text("#!/bin/sh\nexit 97\n")
    (fake_bin / "python3").chmod(0o755)
    write_run(tmp_path, "sft_0", {1000: 0.25})
    result = stage(tmp_path, "pick", PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    for script in (SCRIPT, SCRIPT.with_name("sft_then_rl_cpu.sh")):
        commands = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
        bare = [line for line in commands if re.search(r"(^|[\s(])python3? ", line)]
        assert not bare, f"{script.name} runs python from PATH: {bare}"


def test_unknown_stage_names_the_valid_ones(tmp_path):
    result = stage(tmp_path, "pik")
    assert result.returncode == 2 and "pick | reached | pipeline" in result.stdout


ON_CPU = pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the stage would train; this checks it on CPU")
SFT_CASES = [("pi0", True), ("openvla_oft", True), ("pi0", False)]  # (policy, evaluations)
# (policy, freeze_vision, recipe, binarize_gripper)
RL_CASES = [
    ("pi0", "true", "", ""),
    ("pi0", "false", "", ""),
    ("openvla_oft", "true", "", ""),
    ("pi0", "", "ppo", "true"),
]
NO_GPU = "no node of the Ray cluster has a GPU and simulate_gpus=False"

# Stands in for the stages' $PYTHON: records the one call a stage makes (arguments, environment, directory) for
# REPLAY, and refuses a second call.
RECORDER = """#!/bin/sh
mkdir "$RECORD" || { echo "the stage ran \\$PYTHON twice" >&2; exit 3; }
printf '%s\\0' "$@" > "$RECORD/argv"
env -0 > "$RECORD/env"
pwd > "$RECORD/cwd"
"""

# Runs the recorded calls (`python -m <module> <args>`) one after another in one interpreter, each as `python -m`
# would (runpy, the recorded environment and directory, its own stdout/stderr files and exit status): torch,
# transformers, ManiSkill and Hydra are imported once, and Ray is started once, by the first call that reaches
# Cluster (the entry points fail at its GPU check, leaving it running); the later calls' Clusters join it and fail
# at the same check (Cluster._discover).
REPLAY = """
import os, runpy, sys, traceback

for record in sys.argv[1:]:
    with open(f"{record}/argv", "rb") as f:
        args = [arg.decode() for arg in f.read().split(b"\\0")[:-1]]
    with open(f"{record}/env", "rb") as f:
        env = dict(entry.decode().split("=", 1) for entry in f.read().split(b"\\0")[:-1])
    with open(f"{record}/cwd") as f:
        os.chdir(f.read().rstrip("\\n"))
    os.environ.clear()
    os.environ.update(env)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(f"{record}/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    try:
        if args[0] != "-m":
            raise SystemExit(f"not a `python -m` call: {args}")
        sys.argv = args[1:]  # run_module sets sys.argv[0] to the module's file, as `python -m` does
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
        if not isinstance(exit.code, (int, type(None))):
            print(exit.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush(), sys.stderr.flush()
    for fd, copy in zip((1, 2), saved):
        os.dup2(copy, fd)
    with open(f"{record}/returncode", "w") as f:
        f.write(str(code))
"""


def prepare_sft(work: Path, policy: str, evaluations: bool) -> tuple[list[str], dict[str, str]]:
    """The recipe's own SFT arguments on a dataset of PickCube rgb's layout: the `sft` stage's arguments and
    environment."""
    from rlinf_embodied.datasets import LeRobotDatasetWriter

    writer = LeRobotDatasetWriter(
        str(work / "data"), fps=20, state_dim=29, action_dim=4, camera_shapes={"rgb": (96, 96, 3)}
    )
    frames = np.zeros((10, 96, 96, 3), np.uint8)
    for seed in (100000, 100001):
        writer.add_episode(
            "pick the cube",
            np.zeros((10, 29), np.float32),
            np.zeros((10, 4), np.float32),
            {"rgb": frames},
            np.zeros(10, np.float32),
            True,
            seed,
        )
    # OpenVLA-OFT at the recipe's size: its tiny preset reads a wrist camera that PickCube rgb's demonstrations lack
    size = "openvla-oft-small" if policy == "openvla_oft" else "tiny"
    env = dict(POLICY=policy, SIZE=size, COMPILE="1", BATCH="4")
    if evaluations:  # as the pipeline runs it
        env.update(STOP_AT="0.3", EVAL_INTERVAL="1000", SAVE_INTERVAL="1000", EVAL_EPISODES="64")
    else:  # the stage's defaults: no evaluations, so no sft.eval_episodes either (it would change nothing)
        env.update(EVAL_EPISODES="64")
    # the pipeline's step count (the stage stops at the GPU check before any step): with fewer, the recipe's
    # warm-up and save interval would lie past the run's end, which the config refuses
    return ["sft", "3000"], env


def prepare_rl(
    work: Path, policy: str, freeze_vision: str, recipe: str, binarize_gripper: str
) -> tuple[list[str], dict[str, str]]:
    """The `rl` stage with its per-policy recipe from an SFT checkpoint of the recipe's layout (arm state hidden):
    its arguments and environment."""
    from rlinf_embodied.policies.registry import make_policy

    arm_state = [*range(18), *range(19, 26)]  # the recipe's ARM_STATE
    checkpoint = work / "sft_policy"
    make_policy(policy, size="tiny", action_dim=4, state_dim=29, ignore_state_dims=arm_state).save_pretrained(
        checkpoint
    )
    env = dict(
        POLICY=policy,
        SIZE="tiny",
        CKPT=str(checkpoint),
        NUM_ENVS="16",
        MINIBATCHES="8",
        EPISODE_STEPS="20",  # the tiny presets' chunks: 25 calls cover it (the recipe's pi0-small: 19 x 8 >= 150)
        FREEZE_VISION=freeze_vision,
        FREEZE_LM=freeze_vision,  # PPO's recipe only: GRPO's keeps the language model frozen
        RL_RECIPE=recipe,
        IGNORE_TERM="true",
        BINARIZE_GRIPPER=binarize_gripper,
    )
    # rl_eval's iteration count (stopped by time): the recipe's save interval and critic warm-up fit it
    return ["rl", "1000"], env


@pytest.fixture(scope="module")
def checked_stages(tmp_path_factory) -> dict[tuple, dict]:
    """Every case's stage (SFT_CASES, RL_CASES) run through the script with its `python -m` call recorded, then all
    recorded calls replayed in one interpreter (REPLAY): a subprocess per case spent ~12 s starting Ray and
    importing torch & co. Per case, keyed ("sft", *case) / ("rl", *case): the script's result (`script`), its
    $PYTHON call's arguments (`argv`, None where it made none), the call's `returncode` and `stderr`, and the
    case's `work` directory ($WORK)."""
    root = tmp_path_factory.mktemp("checked_stages")
    recorder = root / "record_python"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    cases = {("sft", *case): prepare_sft for case in SFT_CASES} | {("rl", *case): prepare_rl for case in RL_CASES}
    runs, records = {}, []
    for index, (key, prepare) in enumerate(cases.items()):
        work = root / f"case_{index}"
        work.mkdir()
        args, env_vars = prepare(work, *key[1:])
        record = work / "python_call"
        script = stage(work, *args, PYTHON=str(recorder), RECORD=str(record), **env_vars)
        argv = (record / "argv").read_bytes().decode().split("\0")[:-1] if (record / "argv").exists() else None
        runs[key] = {"script": script, "argv": argv, "work": work, "record": record}
        if argv is not None:
            records.append(str(record))
    subprocess.run([sys.executable, "-c", REPLAY, *records], check=True, timeout=900)
    for run in runs.values():
        if run["argv"] is not None:
            run["returncode"] = int((run["record"] / "returncode").read_text())
            run["stderr"] = (run["record"] / "stderr").read_text()
    return runs


def checked_run(checked_stages: dict, key: tuple, module: str) -> dict:
    """The case's run, asserting that its stage reached `python -m <module>` (once) without an error of its own."""
    run = checked_stages[key]
    script = run["script"]
    assert script.returncode == 0, script.stderr[-2000:]
    assert run["argv"] is not None, f"the stage never ran $PYTHON: {script.stdout[-1000:]}{script.stderr[-1000:]}"
    assert run["argv"][:2] == ["-m", module], run["argv"]
    return run


@ON_CPU
@pytest.mark.parametrize("policy, evaluations", SFT_CASES)
def test_the_sft_stage_passes_every_check_before_its_workers_start(checked_stages, policy, evaluations):
    """The recipe's own SFT arguments (compiled, arm state hidden, 8 px patches, trimmed prompt, evaluations beside
    training, stopping at 30%) on a dataset of PickCube rgb's layout: every config check passes, and the run stops
    only where a CPU machine must (no GPU).
    Stop 40 lost its device session to a check that rejected these arguments after collection."""
    result = checked_run(checked_stages, ("sft", policy, evaluations), "rlinf_embodied.sft")
    assert result["returncode"] != 0
    assert NO_GPU in result["stderr"], result["stderr"][-2000:]


def write_eval(work: Path, tag: str, successes: int, episodes: int) -> None:
    (work / f"eval_{tag}").mkdir(parents=True)
    task = {"task": "t", "successes": successes, "episodes": episodes}
    (work / f"eval_{tag}" / "results.json").write_text(json.dumps({"tasks": [task]}))


def test_noise_picks_the_largest_level_that_keeps_the_ratio_of_deterministic_success(tmp_path):
    """Stop 43: at noise 0.5 the rollouts succeeded 55% against the mean's 69% (ratio 0.8) and GRPO random-walked
    the mean; the pick must drop to a level whose stochastic success is close to the deterministic one."""
    write_eval(tmp_path, "sft", 138, 200)  # 69%
    write_eval(tmp_path, "noise_0.5", 53, 96)  # 55%: ratio 0.80
    write_eval(tmp_path, "noise_0.35", 61, 96)  # 64%: ratio 0.92
    write_eval(tmp_path, "noise_0.2", 66, 96)  # 69%
    result = stage(tmp_path, "noise", "0.5", "0.35", "0.2", NOISE_RATIO="0.9")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.35"
    assert stage(tmp_path, "noise", "0.5", "0.35", "0.2", NOISE_RATIO="0.8").stdout.strip() == "0.5"


@ON_CPU
@pytest.mark.parametrize("policy, freeze_vision, recipe, binarize_gripper", RL_CASES)
def test_the_rl_stage_recipe_passes_every_check_before_its_workers_start(
    checked_stages, policy, freeze_vision, recipe, binarize_gripper
):
    """The `rl` stage with its per-policy recipe (RL_RECIPE_ARGS) from an SFT checkpoint of the recipe's layout
    (arm state hidden): every config check passes, and the run stops only where a CPU machine must (no GPU).
    An empty FREEZE_VISION / FREEZE_LM is the recipe's default: frozen for GRPO, the whole VLM training for PPO."""
    result = checked_run(
        checked_stages, ("rl", policy, freeze_vision, recipe, binarize_gripper), "rlinf_embodied.train"
    )
    assert result["returncode"] != 0
    assert NO_GPU in result["stderr"], result["stderr"][-2000:]
    overrides = (result["work"] / "rl" / ".hydra" / "overrides.yaml").read_text()
    assert ("env.kwargs.binarize_gripper=true" in overrides) == (binarize_gripper == "true")
    expected_freeze = freeze_vision or ("false" if recipe == "ppo" else "true")
    assert f"policy.overrides.freeze_vision_encoder={expected_freeze}" in overrides
    assert ("algorithm=ppo" in overrides) == (recipe == "ppo")
    if policy == "pi0":
        assert f"freeze_language_model={expected_freeze if recipe == 'ppo' else 'true'}" in overrides
    # PPO's critic: the sparse reward's returns stay <= 1 as episodes end at success (the recipe overrides the
    # device helper's IGNORE_TERM=true); GRPO keeps the caller's setting
    last = overrides[overrides.rindex("env.ignore_terminations=") :].split()[0]
    assert last == ("env.ignore_terminations=false" if recipe == "ppo" else "env.ignore_terminations=true")
