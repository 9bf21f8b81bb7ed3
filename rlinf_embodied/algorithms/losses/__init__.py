"""Policy losses; importing this package registers each of them."""

from . import dapo, ppo  # noqa: F401  (registration)
from .common import (
    MinibatchTotals,
    accumulate_metrics,
    aggregate,
    clipped_surrogate,
    explained_variance,
    minibatch_totals,
    reduce_log_probs,
    reduce_mask,
    reference_kl,
    value_loss,
)
from .dapo import dapo_loss
from .ppo import ppo_loss
