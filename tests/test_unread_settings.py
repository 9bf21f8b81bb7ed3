"""unread_settings: command-line settings an entry point composes but never reads are errors, not silent no-ops."""

import pytest

from rlinf_embodied.unread_settings import override_key, reject_unread_settings

UNREAD = {"env.num_envs": "set eval.num_envs instead", "policy": "no policy is read"}


@pytest.mark.parametrize(
    "override, key",
    [("policy=pi0", "policy"), ("+policy.overrides.x=1", "policy.overrides.x"), ("~env.num_envs", "env.num_envs")],
)
def test_override_key(override, key):
    assert override_key(override) == key


@pytest.mark.parametrize("override", ["env.num_envs=32", "+env.num_envs=32", "policy=pi0", "policy.size=pi0-3b"])
def test_an_unread_setting_or_one_under_an_unread_group_is_rejected_with_its_reason(override):
    with pytest.raises(ValueError, match=f"^{override.replace('+', '[+]')}: "):
        reject_unread_settings(["collect.num_episodes=3", override], UNREAD)


def test_settings_that_are_read_pass_including_ones_that_only_share_a_prefix():
    reject_unread_settings(["env.num_envs_extra=3", "policy_size=1", "env.id=rlinf/ManiSkill-PickCube"], UNREAD)
    reject_unread_settings([], UNREAD)


def test_an_ineffective_override_is_refused_whatever_its_value():
    from rlinf_embodied.unread_settings import reject_ineffective_overrides

    with pytest.raises(ValueError, match=r"^policy.overrides.b=2 would change nothing: why$"):
        reject_ineffective_overrides({"a": 1, "b": 2}, "policy.overrides", ("b", "c"), "why")
    reject_ineffective_overrides({"a": 1}, "", ("b", "c"), "why")  # not given: a preset's or a checkpoint's value


def test_an_ineffective_setting_and_the_same_override_are_refused_with_one_message():
    from dataclasses import dataclass

    from rlinf_embodied.unread_settings import reject_ineffective_overrides, reject_ineffective_setting

    @dataclass
    class Section:
        b: int = 0

    with pytest.raises(ValueError) as from_setting:
        reject_ineffective_setting(Section(b=2), "sft", "b", "why")
    with pytest.raises(ValueError) as from_override:
        reject_ineffective_overrides({"b": 2}, "sft", ("b",), "why")
    assert str(from_setting.value) == str(from_override.value) == "sft.b=2 would change nothing: why"
    reject_ineffective_setting(Section(), "sft", "b", "why")  # the default passes
