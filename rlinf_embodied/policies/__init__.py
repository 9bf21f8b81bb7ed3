"""Policies under one RL interface; see base.Policy. Registration is one line per policy."""

from .base import ActOutput, EvalOutput, Policy, PolicyConfig
from .registry import available_policies, load_policy, make_policy, policy_class, register_policy

register_policy("mlp", "rlinf_embodied.policies.mlp.modeling:MLPPolicy")
register_policy("cnn", "rlinf_embodied.policies.cnn.modeling:CNNPolicy")
register_policy("openvla", "rlinf_embodied.policies.openvla.modeling:OpenVLAPolicy")
register_policy("openvla_oft", "rlinf_embodied.policies.openvla_oft.modeling:OpenVLAOFTPolicy")
register_policy("pi0", "rlinf_embodied.policies.pi0.modeling:Pi0Policy")
register_policy("gr00t", "rlinf_embodied.policies.gr00t.modeling:Gr00tPolicy")
register_policy("flow_mlp", "rlinf_embodied.policies.flow_mlp.modeling:FlowMLPPolicy")

__all__ = [
    "ActOutput",
    "EvalOutput",
    "Policy",
    "PolicyConfig",
    "available_policies",
    "load_policy",
    "make_policy",
    "policy_class",
    "register_policy",
]
