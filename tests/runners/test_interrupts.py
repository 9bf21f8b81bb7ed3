"""Ctrl-C and SIGTERM during `python -m rlinf_embodied.train`: checkpoint, resume line, exit 130/143, no process left."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import defaultdict
from typing import Callable

import pytest

from rlinf_embodied.config import TrainConfig
from rlinf_embodied.runners.embodied_runner import EmbodiedRunner
from rlinf_embodied.runners.exploration_gap import ExplorationGap
from rlinf_embodied.runners.interrupts import Interrupted, StopRequest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    "env.num_envs=2",
    "runner.rollout_steps=8",
    "env.max_episode_steps=8",  # one rollout reaches the time limit (runner.reset_each_iteration)
    "algorithm.num_minibatches=2",
    "algorithm.update_epochs=1",
    "policy.size=tiny",
    "runner.progress=false",
]
PROGRESS_BAR_AT_0 = "| 0/50 ["  # tqdm's bar as runner.run draws it, for runner.max_iterations=50


def test_a_second_signal_stops_at_once():
    stop = StopRequest()
    stop.request(signal.SIGTERM)
    assert stop.requested and stop.exit_code == 143 and stop.signal_name == "SIGTERM"
    with pytest.raises(Interrupted) as interrupted:
        stop.request(signal.SIGTERM)
    assert interrupted.value.exit_code == 143
    stop.request(signal.SIGTERM)  # a third one while shutting down is ignored


class LoopOnly(EmbodiedRunner):
    """The runner's iteration loop without workers: each phase records itself, save_checkpoint names a directory.
    `stop_after_logging` requests a stop right after that iteration's metrics line, before the next starts."""

    def __init__(self, max_iterations: int, save_interval: int, stop: StopRequest, stop_after_logging: int):
        self.cfg = TrainConfig()
        self.cfg.runner.max_iterations, self.cfg.runner.save_interval = max_iterations, save_interval
        self.cfg.runner.progress, self.cfg.runner.eval_interval = False, 0
        self.stop, self.start_iteration, self.saved, self.logged = stop, 0, [], []
        self.phase_seconds, self.startup_seconds, self.best_eval_success = defaultdict(float), {}, float("nan")
        self.metrics_logger, self.exploration_gap = self, ExplorationGap()
        self.stop_after_logging = stop_after_logging

    def ready_rollout(self) -> None:
        pass

    def rollout(self, iteration: int) -> dict:
        return {}

    def train(self, iteration: int) -> dict:
        return {}

    def save_checkpoint(self, iteration: int, name: str | None = None) -> str:
        self.saved.append(iteration)
        return f"checkpoints/iteration_{iteration:06d}"

    def log(self, iteration: int, metrics: dict) -> None:  # the metrics logger's
        self.logged.append(iteration)
        if iteration == self.stop_after_logging:
            self.stop.request(signal.SIGINT)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("save_interval, saved", [(0, [0]), (1, [0])])
def test_a_stop_between_two_iterations_checkpoints_the_finished_one(save_interval, saved):
    """CI caught it (stop 21): Ctrl-C after iteration 0's metrics line but before iteration 1 started left no
    checkpoint and no resume line. The finished iteration is saved once, whether or not it had one already."""
    stop = StopRequest()
    runner = LoopOnly(max_iterations=5, save_interval=save_interval, stop=stop, stop_after_logging=0)
    history = runner.run()
    assert [m["iteration"] for m in history] == runner.logged == [0]
    assert runner.saved == saved
    assert (stop.checkpoint, stop.iteration) == ("checkpoints/iteration_000000", 0)


@pytest.mark.parametrize("save_interval, save_final, saved", [(0, True, [2]), (0, False, []), (2, False, [1])])
def test_save_final_decides_whether_the_last_iteration_is_checkpointed(save_interval, save_final, saved):
    runner = LoopOnly(max_iterations=3, save_interval=save_interval, stop=StopRequest(), stop_after_logging=-1)
    runner.cfg.runner.save_final = save_final
    runner.run()
    assert runner.logged == [0, 1, 2] and runner.saved == saved


def test_a_stop_during_an_iteration_checkpoints_that_iteration():
    stop = StopRequest()
    runner = LoopOnly(max_iterations=5, save_interval=0, stop=stop, stop_after_logging=-1)
    runner.train = lambda iteration: stop.request(signal.SIGINT) or {} if iteration == 1 else {}
    runner.run()
    assert runner.logged == [0, 1] and runner.saved == [1] and stop.iteration == 1


def test_a_stop_at_an_evaluation_iteration_saves_and_says_the_evaluation_was_skipped(caplog):
    """The stop skips the evaluation (a scheduler's grace period is short); a resumed run starts after it, so the
    warning is the only place that says which checkpoint went unevaluated and how to evaluate it."""
    stop = StopRequest()
    runner = LoopOnly(max_iterations=5, save_interval=0, stop=stop, stop_after_logging=-1)
    runner.cfg.runner.eval_interval = 2
    runner.evaluate = lambda iteration: pytest.fail(f"evaluated iteration {iteration} after the stop")
    runner.train = lambda iteration: stop.request(signal.SIGINT) or {} if iteration == 1 else {}
    with caplog.at_level("WARNING"):
        runner.run()
    assert runner.logged == [0, 1] and runner.saved == [1]
    assert "skipped iteration 1's evaluation" in caplog.text
    assert "policy.checkpoint=checkpoints/iteration_000001/policy" in caplog.text


@pytest.mark.parametrize("reset_each_iteration", [True, False])
def test_a_resume_that_cannot_be_exact_says_so(caplog, reset_each_iteration):
    """Episodes in progress are not checkpointed: before, a resume with runner.reset_each_iteration=false differed
    from the uninterrupted run in 20 metrics, without a word (the README calls resume exact)."""
    from rlinf_embodied.runners.embodied_runner import warn_resume_not_exact

    cfg = TrainConfig()
    cfg.runner.reset_each_iteration = reset_each_iteration
    with caplog.at_level("WARNING"):
        warn_resume_not_exact(cfg)
    assert ("will not match an uninterrupted run" in caplog.text) == (not reset_each_iteration)


def session_processes(sid: int) -> list[str]:
    """Live (not zombie) processes of the session the training run started in."""
    out = subprocess.run(["ps", "-eo", "sid=,stat=,pid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [" ".join(row) for row in rows if len(row) >= 3 and row[0] == str(sid) and not row[1].startswith("Z")]


def metrics_logged(out) -> Callable[[], bool]:
    """Whether iteration 0's metrics line is in `out`/metrics.jsonl."""
    path = out / "metrics.jsonl"
    return lambda: path.exists() and path.read_text().count("\n") >= 1


def progress_bar_drawn(log_path, out) -> Callable[[], bool]:
    """Whether the default job's progress bar shows 0 iterations (drawn just before the loop's first stop check and
    iteration 0), or else a metrics line is logged (no bar: the run is signalled as late as before, never later)."""
    logged = metrics_logged(out)
    return lambda: PROGRESS_BAR_AT_0 in log_path.read_text() or logged()


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 400) -> None:
    """Poll `ready` (every 0.1 s, up to `timeout` s: start-up takes minutes on a loaded 2-core machine); the run
    exiting first fails."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"training exited with {process.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.1)


def start_training(out, log, *overrides: str) -> subprocess.Popen:
    """`python -m rlinf_embodied.train` in its own session, writing into `out`."""
    return subprocess.Popen(
        [sys.executable, "-m", "rlinf_embodied.train", *overrides, f"runner.output_dir={out}", f"hydra.run.dir={out}"],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_when(process, ready: Callable[[], bool], what: str, signum: int, to_group: bool, exit_code: int) -> None:
    """Signal the run once `ready()`; it must exit with `exit_code`."""
    try:
        wait_until(ready, process, what)
        if to_group:
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
        assert process.wait(timeout=180) == exit_code
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def wait_for_no_process_left(process) -> None:
    deadline = time.monotonic() + 20  # Ray's processes exit asynchronously after ray.shutdown
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_processes(process.pid), session_processes(process.pid)


def check_stopped_run(process, log_path, out) -> tuple[str, int]:
    """No traceback; one resume line naming a checkpoint of the last logged iteration, every iteration logged
    once; no process of the run's session left. Returns the resume line and the checkpoint's iteration."""
    output = log_path.read_text()
    assert "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if "runner.resume=" in line]
    checkpoint = re.search(r"runner\.resume=(\S+)", line).group(1)
    assert os.path.isfile(os.path.join(checkpoint, "actor.pt"))
    iteration = int(checkpoint.rsplit("_", 1)[1])
    assert [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(
        range(iteration + 1)
    )
    wait_for_no_process_left(process)
    return line, iteration


def resume_from(line: str, tmp_path, iterations: int) -> subprocess.CompletedProcess:
    """The printed resume command, run to `iterations` iterations in all."""
    args = shlex.split(line.split("resume with: ", 1)[1])[3:]
    args = [a for a in args if not a.startswith("runner.max_iterations=")]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "rlinf_embodied.train",
            *args,
            f"runner.max_iterations={iterations}",
            f"hydra.run.dir={tmp_path / 'resumed'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )


@pytest.mark.slow
def test_default_command_stops_on_ctrl_c_with_a_resume_line(tmp_path):
    """The default job (`python -m rlinf_embodied.train`, no overrides but the iteration count): Ctrl-C (the
    terminal signals the whole foreground process group) saves a resumable checkpoint, prints the resume
    line and exits 130 leaving no process. That a resume line runs to the end: the SIGTERM test below (the
    same line, a tiny run: the default job twice took 52 s of the suite).

    Ctrl-C comes as soon as the progress bar shows: the loop draws it just before iteration 0 starts, so the run
    stops after iteration 0 (signalled after iteration 0's metrics line, it ran an 800-step iteration more). On a
    loaded machine the signal can beat the loop's first stop check, and the run then rightly stops with nothing to
    resume: only then a second run is stopped after iteration 0's metrics line."""
    for attempt, ready_at in enumerate(("the progress bar", "a metrics line")):
        out, log_path = tmp_path / f"run{attempt}", tmp_path / f"train{attempt}.log"
        with open(log_path, "w") as log:
            process = start_training(out, log, "runner.max_iterations=50")
            ready = progress_bar_drawn(log_path, out) if attempt == 0 else metrics_logged(out)
            stop_when(process, ready, ready_at, signal.SIGINT, to_group=True, exit_code=130)
        output = log_path.read_text()
        if attempt == 0 and "stopped by SIGINT before the first iteration finished: nothing to resume" in output:
            assert "Traceback" not in output and "runner.resume=" not in output, output[-3000:]
            wait_for_no_process_left(process)
            continue
        break
    check_stopped_run(process, log_path, out)


@pytest.mark.slow
def test_sigterm_to_the_driver_saves_a_checkpoint_whose_resume_line_runs_to_the_end(tmp_path):
    """A scheduler's preemption signals the driver process only: it stops the workers itself, exit 143. The
    printed command continues the run in the same directory, ends at runner.max_iterations with exit 0 and
    writes TensorBoard events."""
    out = tmp_path / "run"
    with open(tmp_path / "train.log", "w") as log:
        process = start_training(out, log, "runner.max_iterations=50", *TINY)
        stop_when(process, metrics_logged(out), "a metrics line", signal.SIGTERM, to_group=False, exit_code=143)
    line, iteration = check_stopped_run(process, tmp_path / "train.log", out)
    result = resume_from(line, tmp_path, iteration + 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(
        range(iteration + 2)
    )
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "tensorboard"))
