"""The driver's start-up check of policy configs (workers/policy_loading.py), before any worker exists."""

import pytest

from rlinf_embodied.config import PolicyConfig
from rlinf_embodied.workers.policy_loading import check_policy_config


def _pi0_small(**overrides) -> PolicyConfig:
    return PolicyConfig(name="pi0", size="pi0-small", require_checkpoint=False, overrides=overrides)


def test_state_dims_of_the_env_pass_before_the_env_is_known():
    """pi0-small's preset has state_dim 8, but PickCube's state has 42 dims: hiding its joint velocities
    (9-17) must pass the driver's check, which runs before the env reports its state_dim."""
    check_policy_config(_pi0_small(ignore_state_dims=list(range(9, 18))))


def test_state_dims_beyond_the_widest_state_are_rejected():
    # pi0-small accepts states of up to max_state_dim=64 dims
    with pytest.raises(ValueError, match=r"ignore_state_dims \[64\] are not state dims \(state_dim=64: 0-63\)"):
        check_policy_config(_pi0_small(ignore_state_dims=[64]))


def test_driver_check_leaves_state_dims_of_env_width_policies_to_the_workers():
    """openvla_oft's state width is the env's (no max_state_dim): ignore_state_dims beyond the preset's
    state_dim must pass the driver check; its other checks still run there."""

    def oft(**overrides) -> PolicyConfig:
        return PolicyConfig(name="openvla_oft", size="openvla-oft-small", require_checkpoint=False, overrides=overrides)

    check_policy_config(oft(ignore_state_dims=list(range(9, 18))))
    with pytest.raises(ValueError, match="openvla-oft-small"):
        check_policy_config(oft(image_size=100))  # not a multiple of its 8 px patches
