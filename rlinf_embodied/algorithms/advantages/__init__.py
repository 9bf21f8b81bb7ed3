"""Advantage estimators; importing this package registers each of them."""

from . import gae, grpo, reinforce_pp  # noqa: F401  (registration)
from .gae import compute_gae
from .grpo import compute_grpo_advantages, dynamic_sampling_mask, filter_groups
from .reinforce_pp import compute_reinforce_pp_advantages, discounted_returns
