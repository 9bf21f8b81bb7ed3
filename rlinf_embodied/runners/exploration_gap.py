"""Does the exploration noise fail episodes that the policy's mean would solve?

The rollouts sample with exploration noise (Flow-SDE / Flow-Noise for flow policies, a Gaussian std otherwise);
the periodic evaluation runs the deterministic policy. When the noisy rollouts succeed far less often than the
mean, a group's successes and failures differ mostly by the noise drawn, the policy gradient says little about
the mean, and the mean can walk down while the noisy success stays flat: benchmarks/RESULTS.md stop 22 (an mlp
at std 0.1: 25% noisy vs 66% deterministic, then 3-18%); stop 43 (pi0-small at Flow-SDE noise 0.5: 53% noisy vs
69% at the peak, then 53% deterministic) fits it too, though there it is not yet established. Each evaluation
logs the ratio as `eval/rollout_success_ratio`; for RL from a checkpoint (an SFT/BC start) it warns when the
ratio is low. From scratch the noise is the exploration the policy needs and its
rollouts are expected to trail the mean, so there is no warning.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)

WARN_RATIO = 0.8  # the share of the deterministic success the noisy rollouts should keep (the GPU recipe's NOISE_RATIO)
MIN_EPISODES = 32  # rollout episodes since the last evaluation; fewer make the ratio too noisy to warn on
MIN_EVAL_SUCCESS = 0.1  # below it the deterministic policy has too little success to compare with


class ExplorationGap:
    """The episode-weighted rollout success since the last evaluation, compared with that evaluation."""

    def __init__(self, warn: bool = True) -> None:
        self.warn = warn  # RL from a checkpoint: warn when the noise costs the rollouts too much
        self.successes = 0.0
        self.episodes = 0

    def add_rollout(self, metrics: dict[str, float]) -> None:
        """One iteration's rollout metrics (rollout/success_once over rollout/num_episodes ended episodes)."""
        episodes = int(metrics.get("rollout/num_episodes", 0))
        success = metrics.get("rollout/success_once", math.nan)
        if episodes > 0 and math.isfinite(success):
            self.successes += success * episodes
            self.episodes += episodes

    def compare(self, eval_success: float) -> dict[str, float]:
        """{"eval/rollout_success_ratio": rollout success / eval_success} (empty when either is missing or the
        evaluation succeeded nowhere); warns (if `warn`) when the ratio is under WARN_RATIO. Starts a new window."""
        episodes, rollout_success = self.episodes, self.successes / max(self.episodes, 1)
        self.successes, self.episodes = 0.0, 0
        if episodes == 0 or not math.isfinite(eval_success) or eval_success <= 0:
            return {}
        ratio = rollout_success / eval_success
        if self.warn and ratio < WARN_RATIO and episodes >= MIN_EPISODES and eval_success >= MIN_EVAL_SUCCESS:
            logger.warning(
                "the noisy rollouts succeeded in %.1f%% of %d episodes since the last evaluation, the deterministic "
                "policy in %.1f%% (ratio %.2f < %.1f): the exploration noise may be failing episodes the policy's mean "
                "solves; then the update mostly ranks noise draws and the mean can drift down (benchmarks/RESULTS.md "
                "stops 22 and 43); try a lower exploration noise (policy.overrides.noise_level for flow policies)",
                100 * rollout_success,
                episodes,
                100 * eval_success,
                ratio,
                WARN_RATIO,
            )
        return {"eval/rollout_success_ratio": ratio}
