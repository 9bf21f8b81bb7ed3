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

import pytest

from rlinf_embodied.runners.interrupts import Interrupted, StopRequest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    "env.num_envs=2",
    "runner.rollout_steps=8",
    "algorithm.num_minibatches=2",
    "algorithm.update_epochs=1",
    "policy.size=tiny",
    "runner.progress=false",
]


def test_a_second_signal_stops_at_once():
    stop = StopRequest()
    stop.request(signal.SIGTERM)
    assert stop.requested and stop.exit_code == 143 and stop.signal_name == "SIGTERM"
    with pytest.raises(Interrupted) as interrupted:
        stop.request(signal.SIGTERM)
    assert interrupted.value.exit_code == 143
    stop.request(signal.SIGTERM)  # a third one while shutting down is ignored


def session_processes(sid: int) -> list[str]:
    """Live (not zombie) processes of the session the training run started in."""
    out = subprocess.run(["ps", "-eo", "sid=,stat=,pid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [" ".join(row) for row in rows if len(row) >= 3 and row[0] == str(sid) and not row[1].startswith("Z")]


def wait_for_metrics_lines(path: str, count: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and open(path).read().count("\n") >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"training exited with {process.returncode} before {count} metrics line(s)")
        time.sleep(0.2)
    raise AssertionError(f"no metrics line within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, to_group, exit_code",
    [
        (signal.SIGINT, True, 130),  # Ctrl-C: the terminal signals the whole foreground process group
        (signal.SIGTERM, False, 143),  # a scheduler's preemption: the driver process
    ],
)
def test_signal_saves_a_resumable_checkpoint_and_leaves_no_process(tmp_path, signum, to_group, exit_code):
    out = tmp_path / "run"
    log = open(tmp_path / "train.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlinf_embodied.train",
            "runner.max_iterations=50",
            *TINY,
            f"runner.output_dir={out}",
            f"hydra.run.dir={out}",
        ],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_metrics_lines(str(out / "metrics.jsonl"), 1, process, timeout=400)
        if to_group:
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
        assert process.wait(timeout=180) == exit_code
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = (tmp_path / "train.log").read_text()
    assert "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if "runner.resume=" in line]
    checkpoint = re.search(r"runner\.resume=(\S+)", line).group(1)
    assert os.path.isfile(os.path.join(checkpoint, "actor.pt"))
    iteration = int(checkpoint.rsplit("_", 1)[1])
    assert [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(
        range(iteration + 1)
    )
    deadline = time.monotonic() + 20  # Ray's processes exit asynchronously after ray.shutdown
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not session_processes(process.pid), session_processes(process.pid)
    if signum != signal.SIGINT:
        return
    # The printed command continues the run: one more iteration, in the same directory.
    args = shlex.split(line.split("resume with: ", 1)[1])[3:]
    args = [a for a in args if not a.startswith("runner.max_iterations=")]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlinf_embodied.train",
            *args,
            f"runner.max_iterations={iteration + 2}",
            f"hydra.run.dir={tmp_path / 'resumed'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(
        range(iteration + 2)
    )
