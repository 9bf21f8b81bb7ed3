"""Every VLA preset accepts its own example instructions and every registered task's instruction."""

import pytest

from rlinf_embodied.envs.maniskill.env import TASKS
from rlinf_embodied.policies import policy_class
from rlinf_embodied.policies.common.tokenizer import load_tokenizer
from rlinf_embodied.policies.flow.policy import DEFAULT_INSTRUCTIONS
from rlinf_embodied.policies.flow.processing import tokenize_instructions
from rlinf_embodied.policies.vla_common.policy import prompt_ids


def registered_instructions() -> list[str]:
    instructions = list(DEFAULT_INSTRUCTIONS) + [task.instruction for task in TASKS.values()]
    try:
        from libero.libero import benchmark
    except ImportError:
        return instructions
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
        tasks = benchmark.get_benchmark_dict()[suite]()
        instructions += [tasks.get_task(i).language for i in range(tasks.n_tasks)]
    return instructions


@pytest.mark.parametrize("name", ["pi0", "gr00t", "openvla", "openvla_oft"])
def test_every_preset_fits_every_registered_instruction(name):
    cls = policy_class(name)
    tokenizer = load_tokenizer(None)  # random-init presets have no checkpoint tokenizer
    instructions = registered_instructions()
    assert max(len(text) for text in instructions) > 60  # the long ones are in the list
    for size, preset in cls.presets.items():
        config = cls.config_class.from_dict(dict(preset))
        if name in ("pi0", "gr00t"):
            ids, valid = tokenize_instructions(tokenizer, instructions, config.max_token_len, "cpu")
            assert ids.shape == (len(instructions), config.max_token_len), size
        else:
            lengths = [len(prompt_ids(tokenizer, config, text)) for text in instructions]
            assert max(lengths) <= config.max_token_len, size


def test_too_long_instruction_is_an_error_not_a_truncation():
    tokenizer = load_tokenizer(None)
    with pytest.raises(ValueError, match="max_token_len=8"):
        tokenize_instructions(tokenizer, ["pick up the red cube and move it to the goal"], 8, "cpu")
    config = policy_class("openvla").config_class.from_dict(
        {**policy_class("openvla").presets["tiny"], "max_token_len": 20}
    )
    with pytest.raises(ValueError, match="max_token_len=20"):
        prompt_ids(tokenizer, config, "pick up the red cube")
