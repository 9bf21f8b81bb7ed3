"""AlgorithmConfig: every RL hyperparameter and its default, in one place, validated on creation.

Defaults are ManiSkill's own PPO baseline for state-based tasks with 50-step episodes (PickCube),
which is the default training job. Hydra's `algorithm/*.yaml` groups override them.
`validate()` runs in `__post_init__` (so also in `OmegaConf.to_object`); call it again after
mutating a config in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..finite import reject_non_finite
from ..unread_settings import field_default, reject_ineffective_setting

LOGPROB_LEVELS = ("token", "action", "chunk")


@dataclass
class AlgorithmConfig:
    # ---- what to run ----------------------------------------------------------------------------
    adv_type: str = "gae"  # advantage estimator: "gae", "grpo", "reinforce_pp"
    loss_type: str = "ppo"  # policy loss: "ppo", "dapo"
    # Where the ratio is taken: "token" keeps every action token / dimension, "action" sums log-probs
    # over act_dim (one ratio per action of the chunk), "chunk" sums over chunk and act_dim.
    logprob_level: str = "action"

    # ---- returns / advantages -------------------------------------------------------------------
    gamma: float = 0.8  # per env step; a chunk of C steps is discounted by gamma ** C
    gae_lambda: float = 0.9  # per policy call (chunk)
    # Normalise advantages per minibatch inside the loss (CleanRL's norm_adv), for estimators that do not
    # normalise themselves (GAE); GRPO and Reinforce++ normalise in the estimator (registered normalized=True).
    normalize_advantages: bool = True
    group_size: int = 8  # GRPO: consecutive env ids reset to the same task and seed form a group
    grpo_eps: float = 1e-6  # GRPO: (r - mean) / (std + grpo_eps)
    # DAPO dynamic sampling: drop env groups whose finished episodes' outcomes are all equal (no GRPO
    # signal) and roll out again, with new seeds, until the iteration has as many informative groups as
    # one rollout holds or max_sampling_rounds rollouts were made (DAPO's max_num_gen_batches).
    dynamic_sampling: bool = False
    max_sampling_rounds: int = 4

    # ---- losses ---------------------------------------------------------------------------------
    clip_ratio: float = 0.2  # PPO: ratio clipped to [1 - clip_ratio, 1 + clip_ratio]
    clip_ratio_low: float = 0.2  # DAPO: ratio clipped to [1 - clip_ratio_low, 1 + clip_ratio_high]
    clip_ratio_high: float = 0.28
    value_clip: Optional[float] = None  # clip V around its rollout value by +-value_clip; None = off
    # Weight of the critic's loss; None = 0.5 for an estimator that reads a critic (GAE), 0 for the others
    # (GRPO, Reinforce++), where a value > 0 is an error: they never read the critic it would train.
    vf_coef: Optional[float] = None
    entropy_coef: float = 0.0

    # ---- optimisation ---------------------------------------------------------------------------
    # Learning rate of the policy's weights; None takes the policy's own default (Policy.default_rl_lr:
    # 3e-4 for mlp/cnn, a few 1e-6 for the VLAs, whose pre-trained weights one Adam step at 3e-4 wrecks).
    lr: Optional[float] = None
    # Learning rate of the value head (parameters named "value_head.*"); None takes the policy's
    # default_value_lr (the VLAs: 1e-4, a freshly initialised head) or, where it has none, lr.
    value_lr: Optional[float] = None
    # Decay lr linearly to 0 over runner.max_iterations (CleanRL's anneal_lr): late updates get smaller,
    # which can keep a sharp, low-entropy policy from collapsing. Resume-safe: lr depends on the iteration.
    anneal_lr: bool = False
    # Train only the value head (the policy's lr is 0) for this many iterations first: a policy loaded from
    # an SFT checkpoint comes with an untrained critic, whose advantages would otherwise steer its first updates.
    critic_warmup_iterations: int = 0
    update_epochs: int = 4
    num_minibatches: int = 32
    # Gradient accumulation: each minibatch's forward and backward run on micro-batches of at most this many
    # samples, and one optimizer step follows the whole minibatch; losses, advantage normalisation, metrics and
    # target_kl are the whole minibatch's (exactly, see MinibatchTotals), so only the memory changes. For large
    # minibatches (RLinf's PPO for pi0: one step per whole rollout, micro-batches of 32). None = no splitting.
    micro_batch_size: Optional[int] = None
    max_grad_norm: float = 0.5
    # Stop an iteration's update epochs once approx_kl exceeds this (loops that support it); None = off.
    target_kl: Optional[float] = 0.1
    # Adapt the policy's lr to the step it measures (rsl_rl's adaptive schedule), so one setting serves an mlp
    # and a VLA: after each update a scale on lr is multiplied by 1.5 when the iteration's approx_kl was below
    # desired_kl / 2 and divided by 1.5 when above 2 * desired_kl, within [1 / adaptive_lr_max_scale,
    # adaptive_lr_max_scale]. The value head's lr is not scaled. None = off.
    desired_kl: Optional[float] = None
    adaptive_lr_max_scale: float = 10.0
    # Score the rollout's samples again with the actor, before its update, and use those log-probs as PPO's
    # old ones (verl's "recompute old log-probs"). The rollout samples with a KV cache or at another batch
    # shape, so in bf16 its log-probs differ from the actor's by rounding (pi0-3b on LIBERO: initial approx_kl
    # 0.001-0.002, max |ratio - 1| 0.17, one H200); recomputed, the first minibatch's ratio is exactly 1. The
    # mismatch is still logged (train/rollout_actor_approx_kl). Costs one no-grad forward over the samples.
    recompute_log_probs: bool = False
    # Weight of a KL penalty from the policy the run started from (policy.checkpoint, e.g. an SFT policy, or
    # the seeded initial weights), on the minibatch's own actions: the k3 estimate exp(r) - 1 - r with
    # r = log pi_ref - log pi, at logprob_level, clipped to |r| <= 20 (verl's low_var_kl). PPO's clip bounds
    # each update against the previous policy only; this keeps the run near its start over many updates, so
    # an SFT policy is not unlearned while its critic is still poor (stop 20's CPU runs from a 44% BC start
    # fell to 6-19% within 100k env steps without it). The actor holds a frozen copy of the starting policy
    # in the compute dtype (offloaded with it). 0 = off.
    ref_kl_coef: float = 0.0

    def __post_init__(self) -> None:
        from .registry import advantage_names

        if self.adv_type in advantage_names() and self.vf_coef is None:
            self.vf_coef = 0.5 if self.uses_critic else 0.0
        self.validate()

    # ---- what other layers ask of the algorithm (answered by the estimator's registry traits) -----
    @property
    def grouped(self) -> bool:
        """Whether envs run in groups of group_size sharing task and seed (GRPO)."""
        from .registry import advantage_traits

        return advantage_traits(self.adv_type).grouped

    @property
    def env_group_size(self) -> int:
        """Envs per group that reset to the same task and seed and stay together on one actor rank (1 = none)."""
        return self.group_size if self.grouped else 1

    @property
    def uses_critic(self) -> bool:
        """Whether the estimator reads the critic's values (GAE): only then is the critic trained and are
        time-limit truncations bootstrapped with V(final obs)."""
        from .registry import advantage_traits

        return advantage_traits(self.adv_type).critic

    @property
    def normalize_in_loss(self) -> bool:
        """Normalise advantages per minibatch in the loss: asked for, and not done by the estimator."""
        from .registry import advantage_traits

        return self.normalize_advantages and not advantage_traits(self.adv_type).normalized

    def _reject_critic_settings(self) -> None:
        """A critic-free estimator, or vf_coef=0, trains no critic: a critic setting away from its off value would do
        nothing (vf_coef=0: a critic warmup would train nothing at all)."""
        off = {"vf_coef": 0.0, "critic_warmup_iterations": 0, "value_lr": None, "value_clip": None}
        for key, off_value in off.items():
            if self.uses_critic and getattr(self, key) != off_value:
                raise ValueError(
                    f"algorithm.{key}={getattr(self, key)}: algorithm.vf_coef=0 trains no critic, so it would change "
                    f"nothing; set algorithm.{key}={'null' if off_value is None else off_value}, or vf_coef > 0 "
                    f"(0.5 is PPO's)"
                )
            if getattr(self, key) != off_value:
                raise ValueError(
                    f"algorithm.{key}={getattr(self, key)}: adv_type={self.adv_type!r} reads no critic, so there is "
                    f"none to train; set algorithm.{key}={'null' if off_value is None else off_value} (as the config "
                    f"group algorithm={self.adv_type} does) or use an estimator with a critic ({_critic_estimators()})"
                )

    def _first_set_outside(self, settings: tuple[str, ...], read: tuple[str, ...]) -> str | None:
        """The first of `settings` that is away from its default but not among those `read`; None if none is."""
        unread = (key for key in settings if key not in read and getattr(self, key) != field_default(self, key))
        return next(unread, None)

    def _reject_ineffective_settings(self) -> None:
        """Settings the chosen loss or estimator never reads, away from their defaults, would change nothing."""
        from .registry import CLIP_SETTINGS, ESTIMATOR_SETTINGS, advantage_names, advantage_traits
        from .registry import loss_clip_settings, loss_names

        read = advantage_traits(self.adv_type).settings
        key = self._first_set_outside(ESTIMATOR_SETTINGS, read)
        if key is not None:
            readers = [name for name in advantage_names() if key in advantage_traits(name).settings]
            raise ValueError(
                f"algorithm.{key}={getattr(self, key)}: adv_type={self.adv_type!r} reads only "
                f"{' / '.join(read) or 'none'} of {' / '.join(ESTIMATOR_SETTINGS)}, so it would change nothing; "
                f"leave it out, or use an estimator that reads it: {readers}"
            )
        read = loss_clip_settings(self.loss_type)
        key = self._first_set_outside(CLIP_SETTINGS, read)
        if key is not None:
            readers = [name for name in loss_names() if key in loss_clip_settings(name)]
            own = " / ".join(read) or "nothing"
            raise ValueError(
                f"algorithm.{key}={getattr(self, key)}: loss_type={self.loss_type!r} clips with {own}, so it "
                f"would change nothing; set {own} instead, or loss_type={readers[0]!r} (reads {key}: {readers})"
            )
        if not self.dynamic_sampling:
            reason = "it caps dynamic sampling's rollouts, which is off; set algorithm.dynamic_sampling=true (dapo)"
            reject_ineffective_setting(self, "algorithm", "max_sampling_rounds", reason)
        if self.desired_kl is None:
            reason = "it bounds the adaptive lr, which is off; set algorithm.desired_kl to turn it on"
            reject_ineffective_setting(self, "algorithm", "adaptive_lr_max_scale", reason)
        if not self.normalize_advantages and advantage_traits(self.adv_type).normalized:
            raise ValueError(
                f"algorithm.normalize_advantages=False: adv_type={self.adv_type!r} normalises its advantages "
                f"itself (per group or batch) and the loss never normalises them again, so it would change nothing; "
                f"leave it at true (it applies to estimators that do not normalise, e.g. gae)"
            )

    def validate(self) -> "AlgorithmConfig":
        from .registry import advantage_names, loss_clip_settings, loss_names  # filled when the package is imported

        reject_non_finite(self, "algorithm.")
        _one_of("adv_type", self.adv_type, advantage_names(), "advantage estimator")
        _one_of("loss_type", self.loss_type, loss_names(), "policy loss")
        _one_of("logprob_level", self.logprob_level, LOGPROB_LEVELS, "log-prob level")
        _in_range("gamma", self.gamma, 0.0, 1.0)
        _in_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        # the ratio's lower bound 1 - clip_ratio must stay above 0, else PPO's pessimistic lower clip is gone
        _in_range("clip_ratio", self.clip_ratio, 0.0, 1.0, low_open=True, high_open=True)
        _in_range("clip_ratio_low", self.clip_ratio_low, 0.0, 1.0, low_open=True, high_open=True)
        _positive("clip_ratio_high", self.clip_ratio_high)
        if self.value_clip is not None:
            _positive("value_clip", self.value_clip)
        if self.vf_coef is None:
            raise ValueError("algorithm.vf_coef=None: set a number (0.5 is PPO's) or leave it out at creation")
        _at_least("vf_coef", self.vf_coef, 0.0)
        _at_least("entropy_coef", self.entropy_coef, 0.0)  # < 0 would reward collapsing the policy's noise
        if not self.uses_critic or self.vf_coef == 0:
            self._reject_critic_settings()
        self._reject_ineffective_settings()
        both_bounds = {"clip_ratio_low", "clip_ratio_high"} <= set(loss_clip_settings(self.loss_type))
        if both_bounds and self.clip_ratio_high < self.clip_ratio_low:
            raise ValueError(
                f"algorithm.clip_ratio_high={self.clip_ratio_high} is below algorithm.clip_ratio_low="
                f"{self.clip_ratio_low}: {self.loss_type!r} clips higher (the ratio's upper bound 1 + clip_ratio_high "
                f"reaches further than its lower bound), so set clip_ratio_high >= clip_ratio_low (DAPO: 0.28 and 0.2)"
            )
        _at_least("group_size", self.group_size, 1)
        if self.grouped and self.group_size < 2:
            raise ValueError(
                f"algorithm.group_size={self.group_size}: {self.adv_type.upper()} compares episodes within a "
                f"group, so it needs group_size >= 2"
            )
        if self.dynamic_sampling and not self.grouped:
            from .registry import advantage_traits

            grouped = [name for name in advantage_names() if advantage_traits(name).grouped]
            raise ValueError(
                f"algorithm.dynamic_sampling=True drops uninformative env groups; it needs a grouped "
                f"advantage estimator, adv_type={grouped[0]!r} (grouped: {grouped}), not {self.adv_type!r}"
            )
        _at_least("max_sampling_rounds", self.max_sampling_rounds, 1)
        _positive("grpo_eps", self.grpo_eps)
        for key in ("lr", "value_lr"):
            if getattr(self, key) is not None:
                _positive(key, getattr(self, key))
        _at_least("critic_warmup_iterations", self.critic_warmup_iterations, 0)
        _at_least("ref_kl_coef", self.ref_kl_coef, 0.0)
        _at_least("update_epochs", self.update_epochs, 1)
        _at_least("num_minibatches", self.num_minibatches, 1)
        if self.micro_batch_size is not None:
            _at_least("micro_batch_size", self.micro_batch_size, 1)
        _positive("max_grad_norm", self.max_grad_norm)
        if self.target_kl is not None:
            _positive("target_kl", self.target_kl)
        if self.desired_kl is not None:
            _positive("desired_kl", self.desired_kl)
            if self.target_kl is not None and self.desired_kl >= self.target_kl:
                raise ValueError(
                    f"algorithm.desired_kl={self.desired_kl} is not below algorithm.target_kl={self.target_kl}: "
                    "updates stop at target_kl, so the adaptive lr would aim at a step it is never allowed to "
                    "take; set desired_kl below target_kl (e.g. target_kl / 5) or target_kl=null"
                )
        _at_least("adaptive_lr_max_scale", self.adaptive_lr_max_scale, 1.0)
        return self


def _critic_estimators() -> list[str]:
    from .registry import advantage_names, advantage_traits

    return [name for name in advantage_names() if advantage_traits(name).critic]


def _one_of(key: str, value: str, valid, what: str) -> None:
    if value not in valid:
        raise ValueError(f"algorithm.{key}={value!r} is not a known {what}; valid: {sorted(valid)}")


def _in_range(key: str, value: float, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"algorithm.{key}={value!r} must lie in {interval}")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"algorithm.{key}={value!r} must be > 0")


def _at_least(key: str, value: float, minimum: float) -> None:
    if not value >= minimum:
        raise ValueError(f"algorithm.{key}={value!r} must be >= {minimum}")


def annealed_lr(cfg: AlgorithmConfig, iteration: int, max_iterations: int, base_lr: float | None = None) -> float:
    """The learning rate of `iteration` (0-based): base_lr (default cfg.lr), or with anneal_lr
    base_lr * (1 - iteration / max_iterations)."""
    base_lr = cfg.lr if base_lr is None else base_lr
    if base_lr is None:
        raise ValueError("algorithm.lr is None: resolve it from the policy first (resolve_learning_rates)")
    if not cfg.anneal_lr:
        return base_lr
    if max_iterations < 1:
        raise ValueError(f"anneal_lr needs runner.max_iterations >= 1, got {max_iterations}")
    return base_lr * max(0.0, 1.0 - iteration / max_iterations)


def adapted_lr_scale(cfg: AlgorithmConfig, scale: float, approx_kl: float) -> float:
    """The policy lr's scale after an update that measured `approx_kl` (algorithm.desired_kl; unchanged when off)."""
    if cfg.desired_kl is None:
        return scale
    if approx_kl > 2.0 * cfg.desired_kl:
        scale /= 1.5
    elif approx_kl < cfg.desired_kl / 2.0:
        scale *= 1.5
    return min(max(scale, 1.0 / cfg.adaptive_lr_max_scale), cfg.adaptive_lr_max_scale)


def resolve_learning_rates(
    cfg: AlgorithmConfig, default_lr: float, default_value_lr: float | None
) -> tuple[float, float]:
    """(policy lr, value-head lr): the config's where set, else the policy's defaults (value: else lr)."""
    lr = cfg.lr if cfg.lr is not None else default_lr
    value_lr = cfg.value_lr if cfg.value_lr is not None else (default_value_lr if default_value_lr is not None else lr)
    return lr, value_lr
