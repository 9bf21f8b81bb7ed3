"""AlgorithmConfig: every RL hyperparameter and its default, in one place, validated on creation.

Defaults are ManiSkill's own PPO baseline for state-based tasks with 50-step episodes (PickCube),
which is the default training job. Hydra's `algorithm/*.yaml` groups override them.
`validate()` runs in `__post_init__` (so also in `OmegaConf.to_object`); call it again after
mutating a config in code. It checks each field's type first (an int count is no 2.5 or True, a float no string).
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
    # over act_dim (one ratio per action of the chunk), "chunk" sums over chunk and act_dim. The entropy is
    # reduced the same way, so train/entropy and entropy_coef's strength depend on it: per dimension at "token"
    # (the mean of the dimensions' entropies), per action at "action" (their sum: act_dim times "token"'s, e.g.
    # 4x on PushCube, 7x on LIBERO), per chunk at "chunk" (action_chunk x act_dim times). train/entropy is not
    # comparable across levels (algorithm=grpo and dapo: token; ppo and reinforce_pp: action).
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
    # (GRPO, Reinforce++), where a value > 0 is an error: they never read the critic it would train. GAE needs
    # vf_coef > 0: it reads V(s) in every advantage, and 0 would leave that critic untrained.
    vf_coef: Optional[float] = None
    # Weight of the entropy bonus, on the entropy at logprob_level: the same coefficient pulls act_dim times
    # harder at "action" than at "token" (and action_chunk x act_dim times at "chunk"); scale it with the level.
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
    # Stop an iteration's update epochs once a minibatch's approx_kl (measured before its step, so the KL of the
    # steps before it) exceeds this; None = off. With one step per update (update_epochs x num_minibatches == 1)
    # there is no step to stop: a value other than the default is refused.
    target_kl: Optional[float] = 0.1
    # Adapt the policy's lr to the step it measures (rsl_rl's adaptive schedule), so one setting serves an mlp
    # and a VLA: after each update a scale on lr is multiplied by 1.5 when the update's KL was below
    # desired_kl / 2 and divided by 1.5 when above 2 * desired_kl, within [1 / adaptive_lr_max_scale,
    # adaptive_lr_max_scale]. The value head's lr is not scaled. None = off. The update's KL is
    # train/post_step_approx_kl, the mean over the minibatches evaluated after its first step (train/approx_kl
    # also counts the first minibatch, measured before any step: ~0). So it needs update_epochs x num_minibatches
    # >= 2, and desired_kl < target_kl / 2 (updates end at target_kl: a KL above 2 x desired_kl would hardly occur).
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
        nothing (vf_coef=0: a critic warmup would train nothing at all). An estimator that reads a critic (GAE) needs
        vf_coef > 0 itself: with 0 its advantages would come from a value head that never trains."""
        off = {"vf_coef": 0.0, "critic_warmup_iterations": 0, "value_lr": None, "value_clip": None}
        for key, off_value in off.items():
            if getattr(self, key) == off_value:
                continue
            if self.uses_critic:
                raise ValueError(
                    f"algorithm.{key}={getattr(self, key)}: algorithm.vf_coef=0 trains no critic, so it would change "
                    f"nothing; set algorithm.{key}={'null' if off_value is None else off_value}, or vf_coef > 0 "
                    f"(0.5 is PPO's)"
                )
            raise ValueError(
                f"algorithm.{key}={getattr(self, key)}: adv_type={self.adv_type!r} reads no critic, so there is "
                f"none to train; set algorithm.{key}={'null' if off_value is None else off_value} (as the config "
                f"group algorithm={self.adv_type} does) or use an estimator with a critic ({_critic_estimators()})"
            )
        if self.uses_critic:
            self._reject_untrained_critic()

    def _reject_untrained_critic(self) -> None:
        """vf_coef=0 under an estimator that reads the critic: its advantages would come from an untrained head."""
        raise ValueError(
            f"algorithm.vf_coef={self.vf_coef}: adv_type={self.adv_type!r} reads the critic's values (V(s) in every "
            f"advantage, V(final obs) at time-limit truncations), but vf_coef=0 never trains the critic, so the "
            f"advantages would come from a randomly initialised value head; set algorithm.vf_coef > 0 (0.5 is PPO's; "
            f"the config groups of critic-free estimators set 0), or a critic-free algorithm.adv_type "
            f"({_critic_estimators(critic=False)})"
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
        from ..config import reject_wrong_types  # here: rlinf_embodied.config imports this module
        from .registry import advantage_names, loss_clip_settings, loss_names  # filled when the package is imported

        # types first (update_epochs=2.5, num_minibatches=True and gamma='0.9' passed, or failed in a comparison)
        reject_wrong_types(self, "algorithm.")
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
        self._check_kl_settings()
        return self

    @property
    def optimizer_steps_per_update(self) -> int:
        """The most optimizer steps one update takes: update_epochs x num_minibatches (target_kl may end it sooner)."""
        return self.update_epochs * self.num_minibatches

    def _check_kl_settings(self) -> None:
        """target_kl and desired_kl act on the approx_kl of minibatches evaluated after an optimizer step (each
        minibatch's is measured before its own step, the first's before any: ~0). With a single step per update
        there is none; and with desired_kl at or above target_kl / 2, updates ended at target_kl practically never
        reach the adaptive lr's decrease branch (approx_kl > 2 x desired_kl)."""
        _at_least("adaptive_lr_max_scale", self.adaptive_lr_max_scale, 1.0)
        if self.target_kl is not None:
            _positive("target_kl", self.target_kl)
            if self.optimizer_steps_per_update == 1:
                reason = (
                    f"{self._one_step_per_update()}, and target_kl can only skip steps after the first; set "
                    f"update_epochs x num_minibatches >= 2 (e.g. algorithm.num_minibatches=2), or leave target_kl at "
                    f"its default ({field_default(self, 'target_kl')}) or null"
                )
                reject_ineffective_setting(self, "algorithm", "target_kl", reason)
        if self.desired_kl is None:
            return
        _positive("desired_kl", self.desired_kl)
        if self.optimizer_steps_per_update == 1:
            raise ValueError(
                f"algorithm.desired_kl={self.desired_kl}: {self._one_step_per_update()}, so the adaptive lr would "
                f"read ~0 and grow x1.5 every iteration up to adaptive_lr_max_scale; set update_epochs x "
                f"num_minibatches >= 2 (e.g. algorithm.num_minibatches=2), or desired_kl=null"
            )
        if self.target_kl is None:
            return
        if self.desired_kl >= self.target_kl:
            raise ValueError(
                f"algorithm.desired_kl={self.desired_kl} is not below algorithm.target_kl={self.target_kl}: "
                "updates stop at target_kl, so the adaptive lr would aim at a step it is never allowed to "
                "take; set desired_kl below target_kl (e.g. target_kl / 5) or target_kl=null"
            )
        if 2 * self.desired_kl >= self.target_kl:
            raise ValueError(
                f"algorithm.desired_kl={self.desired_kl} is not below algorithm.target_kl / 2 = {self.target_kl / 2:g}: "
                f"the adaptive lr shrinks only after an update whose approx_kl exceeds 2 x desired_kl = "
                f"{2 * self.desired_kl:g}, but updates stop at target_kl={self.target_kl}, so the lr could practically "
                f"only grow (up to adaptive_lr_max_scale); set desired_kl < target_kl / 2 (e.g. target_kl / 5 = "
                f"{self.target_kl / 5:g}) or target_kl=null"
            )

    def _one_step_per_update(self) -> str:
        """Why a KL setting has nothing to read when an update takes one optimizer step."""
        return (
            f"algorithm.update_epochs={self.update_epochs} x algorithm.num_minibatches={self.num_minibatches} take one "
            f"optimizer step per update, and each minibatch's approx_kl is measured before its own step: no KL after a "
            f"step is ever measured"
        )


def _critic_estimators(critic: bool = True) -> list[str]:
    """The registered estimators that read a critic (critic=False: those that do not)."""
    from .registry import advantage_names, advantage_traits

    return [name for name in advantage_names() if advantage_traits(name).critic == critic]


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
    """The policy lr's scale after an update that measured `approx_kl` (algorithm.desired_kl; unchanged when off).
    The actor passes the KL of the minibatches evaluated after the update's first step (post_step_approx_kl)."""
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
