"""The LIBERO suites we register: gymnasium id -> LIBERO benchmark name, task count, episode budget.

Kept free of simulator imports so registration is cheap. Task counts are those of the suites'
BDDL folders; episode budgets follow OpenVLA's LIBERO evaluation (longest demo + margin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..batching import is_int


@dataclass(frozen=True)
class LiberoSuite:
    env_id: str  # gymnasium id
    benchmark: str  # key of libero.libero.benchmark.get_benchmark_dict()
    num_tasks: int
    max_episode_steps: int

    def validate_task_id(self, task_id: Any) -> int:
        """`task_id` as an int in 0..num_tasks-1 (numpy ints included). A value that is no int (a string, float or
        bool) is refused as such (before: reported as out of range, e.g. task_id='3' or True)."""
        if not is_int(task_id):
            raise ValueError(
                f"task_id={task_id!r} must be an int (the index of a task of {self.env_id} ({self.benchmark})): "
                f"valid task ids are 0..{self.num_tasks - 1}"
            )
        if not 0 <= task_id < self.num_tasks:
            raise ValueError(
                f"task_id={task_id!r} is out of range for {self.env_id} ({self.benchmark}): "
                f"valid task ids are 0..{self.num_tasks - 1}"
            )
        return int(task_id)


LIBERO_SUITES: dict[str, LiberoSuite] = {
    suite.env_id: suite
    for suite in (
        LiberoSuite("rlinf/LIBERO-Spatial", "libero_spatial", 10, 220),
        LiberoSuite("rlinf/LIBERO-Object", "libero_object", 10, 280),
        LiberoSuite("rlinf/LIBERO-Goal", "libero_goal", 10, 300),
        LiberoSuite("rlinf/LIBERO-10", "libero_10", 10, 520),
        LiberoSuite("rlinf/LIBERO-90", "libero_90", 90, 400),
    )
}
SUITES_BY_BENCHMARK: dict[str, LiberoSuite] = {suite.benchmark: suite for suite in LIBERO_SUITES.values()}


def get_suite(name: str) -> LiberoSuite:
    """Look a suite up by gymnasium id ("rlinf/LIBERO-Goal") or LIBERO benchmark name ("libero_goal")."""
    suite = LIBERO_SUITES.get(name) or SUITES_BY_BENCHMARK.get(name)
    if suite is None:
        raise ValueError(
            f"unknown LIBERO suite {name!r}; valid: {sorted(LIBERO_SUITES)} or {sorted(SUITES_BY_BENCHMARK)}"
        )
    return suite
