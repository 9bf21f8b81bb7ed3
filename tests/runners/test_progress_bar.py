"""The training loop's progress bar: the count and the metrics beside it belong to the same iteration."""

from __future__ import annotations

import io
import math
from collections import defaultdict

from tqdm import tqdm

from rlinf_embodied.config import TrainConfig
from rlinf_embodied.runners import embodied_runner
from rlinf_embodied.runners.embodied_runner import EmbodiedRunner
from rlinf_embodied.runners.exploration_gap import ExplorationGap


class RecordingBar(tqdm):
    """The runner's bar, drawn at every change (no minimum interval) into a buffer; each drawing's (count, total,
    postfix) recorded, as the terminal would show it."""

    shown: list[tuple[int, int, str]] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "file": io.StringIO(), "mininterval": 0, "miniters": 1})

    def display(self, msg=None, pos=None):
        RecordingBar.shown.append((self.n, self.total, self.postfix or ""))
        return super().display(msg, pos)


class MetricsSink:
    def log(self, iteration, metrics):
        pass

    def close(self):
        pass


def loop_only_runner(cfg: TrainConfig, returns: list[float]) -> EmbodiedRunner:
    """An EmbodiedRunner without workers: its rollout returns `returns[iteration]`, its training nothing."""
    runner = object.__new__(EmbodiedRunner)
    runner.cfg, runner.stop, runner.start_iteration = cfg, None, 0
    runner.phase_seconds = defaultdict(float)
    runner.exploration_gap = ExplorationGap(warn=False)
    runner.best_eval_success, runner.startup_seconds = math.nan, {}
    runner.metrics_logger = MetricsSink()
    runner.ready_rollout = lambda: None
    runner.rollout = lambda iteration: {"rollout/success_once": 0.0, "rollout/episode_return": returns[iteration]}
    runner.train = lambda iteration: {}
    return runner


def test_the_count_shown_is_the_iteration_whose_metrics_it_shows(monkeypatch):
    """Before: `1/2 [...] success=0.00, ret=2.41`, 2.41 being iteration 1's (the second's) return: the postfix was
    set before iterating the bar counted the iteration."""
    monkeypatch.setattr(embodied_runner, "tqdm", RecordingBar)
    RecordingBar.shown = []
    cfg = TrainConfig()
    cfg.runner.max_iterations, cfg.runner.save_final, cfg.runner.progress = 3, False, True
    returns = [1.75, 2.41, 3.5]
    history = loop_only_runner(cfg, returns).run()
    assert [m["iteration"] for m in history] == [0, 1, 2]
    with_metrics = [(n, total, postfix) for n, total, postfix in RecordingBar.shown if postfix]
    assert with_metrics, RecordingBar.shown
    for n, total, postfix in with_metrics:
        assert total == 3 and n >= 1, f"{n}/{total} [...] {postfix}"  # no count behind its metrics
        assert postfix == f"success=0.00, ret={returns[n - 1]:.2f}", f"{n}/{total} [...] {postfix}"  # the n-th's
    assert RecordingBar.shown[-1] == (3, 3, "success=0.00, ret=3.50")  # the final state: N/N, the last iteration's
