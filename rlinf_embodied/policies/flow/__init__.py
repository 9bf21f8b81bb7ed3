"""Shared flow-matching machinery for the VLA policies (pi0, GR00T).

* sde.py: Gaussian transition math (Flow-SDE, ODE step, log-prob, entropy, stochastic-step choice)
* sampler.py: sample a denoising chain / recompute its log-probs from a per-step transition function
* heads.py: Flow-Noise std head, value head
* policy.py: FlowPolicy, the act/evaluate/checkpoint implementation both policies inherit
"""

from .config import FlowPolicyConfig
from .heads import FlowNoiseHead, ValueHead, masked_mean
from .sampler import ChainSample, StepDistribution, chain_log_probs, sample_chain
from .sde import (
    choose_stochastic_steps,
    flow_sde_sigma,
    flow_sde_step,
    gaussian_entropy,
    gaussian_log_prob,
    ode_step_mean,
    timestep_grid,
)
from .utils import select_rows, skip_weight_init

__all__ = [
    "ChainSample",
    "FlowNoiseHead",
    "FlowPolicyConfig",
    "StepDistribution",
    "ValueHead",
    "chain_log_probs",
    "choose_stochastic_steps",
    "flow_sde_sigma",
    "flow_sde_step",
    "gaussian_entropy",
    "gaussian_log_prob",
    "masked_mean",
    "ode_step_mean",
    "sample_chain",
    "select_rows",
    "skip_weight_init",
    "timestep_grid",
]
