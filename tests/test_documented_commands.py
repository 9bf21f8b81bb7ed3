"""Every `python -m rlinf_embodied.<train|eval|sft|collect|place> ...` command shown in the README, in the config
files' comments and in the entry points' docstrings composes onto the typed schema and passes the checks
the driver runs before Ray starts (nothing is run). Documented commands cannot rot unnoticed."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex

import pytest

from rlinf_embodied.config import compose_config
from rlinf_embodied.paths import CONFIG_DIR
from rlinf_embodied.workers.policy_loading import check_policy_config


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = {"train": "config", "eval": "eval", "sft": "sft", "collect": "collect", "place": "config"}
COMMAND = re.compile(r"python3? -m rlinf_embodied\.(train|eval|sft|collect|place)(?=\s|$)(.*)")
PLACEHOLDER = "placeholder"


def _joined_lines(text: str) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined."""
    lines, current = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
        else:
            lines.append(current + line)
            current = ""
    return lines


def _readme_commands(path: str) -> list[str]:
    """Lines of the shell code blocks (```bash, ```sh or a bare ```)."""
    blocks, current, language = [], None, None
    for line in open(path).read().splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if language in ("", "bash", "sh", "shell"):
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return [line for block in blocks for line in _joined_lines(block)]


def _config_comment_commands(path: str) -> list[str]:
    return [line.split("#", 1)[1] for line in open(path) if line.lstrip().startswith("#")]


def _docstring_commands(path: str) -> list[str]:
    import ast

    docstring = ast.get_docstring(ast.parse(open(path).read())) or ""
    return [line for line in _joined_lines(docstring) if line.lstrip().startswith("python")]


def documented_commands() -> list[tuple[str, str, str]]:
    """(where, module, argument string) for each documented command."""
    sources = [(os.path.join(ROOT, "README.md"), _readme_commands)]
    sources += [
        (path, _config_comment_commands)
        for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))
    ]
    sources += [(os.path.join(ROOT, "rlinf_embodied", f"{module}.py"), _docstring_commands) for module in CONFIG_NAMES]
    found = []
    for path, extract in sources:
        for line in extract(path):
            match = COMMAND.search(line)
            if match:
                args = re.split(r"&&|;|\|", match.group(2))[0]
                found.append((os.path.relpath(path, ROOT), match.group(1), args.strip()))
    return found


def overrides_of(args: str) -> list[str]:
    args = re.sub(r"(^|\s)#.*$", "", args)  # a trailing comment
    args = re.sub(r"<[^>]*>", PLACEHOLDER, args)  # <dir>, <LeRobot dataset dir>
    overrides = []
    for token in shlex.split(args):
        token = token.strip("[]") if token.startswith("[") and token.endswith("]") and "=" in token else token
        key, _, value = token.partition("=")
        if "." not in key and value == PLACEHOLDER:
            continue  # `env=<env>`: any option of the config group
        overrides.append(token)
    return overrides


COMMANDS = documented_commands()


def test_the_documentation_shows_commands_of_every_entry_point():
    assert {module for _, module, _ in COMMANDS} == set(CONFIG_NAMES)
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("where, module, args", COMMANDS, ids=[f"{w}:{m} {a}"[:90] for w, m, a in COMMANDS])
def test_documented_command_composes(where, module, args, tmp_path):
    overrides = overrides_of(args)
    typed = compose_config(CONFIG_NAMES[module], overrides)
    policy = typed.policy
    if policy.checkpoint is not None and not os.path.isdir(policy.checkpoint):
        # /ckpt/pi0, outputs/.../policy: a stand-in directory with the config.json that names the policy
        policy.checkpoint = str(tmp_path)
        (tmp_path / "config.json").write_text(json.dumps({"policy": policy.name}))
    check_policy_config(policy)
    if module in ("eval", "collect"):  # the settings these entry points refuse because they never read them
        from rlinf_embodied.collect import unread_settings
        from rlinf_embodied.eval import UNREAD_SETTINGS
        from rlinf_embodied.unread_settings import reject_unread_settings

        rules = UNREAD_SETTINGS if module == "eval" else unread_settings(typed.collect.source)
        reject_unread_settings(overrides, rules)
    if module == "eval":  # eval's own start-up checks of its settings
        from rlinf_embodied.eval import reject_sampling_overrides
        from rlinf_embodied.runners.evaluator import check_eval_seed

        check_eval_seed(typed.eval)
        reject_sampling_overrides(dict(typed.policy.overrides), typed.eval.deterministic)
    if module == "sft":  # the settings SFT refuses as unread (env settings without evaluations), and its placement
        from rlinf_embodied.runners.sft_runner import actor_placement
        from rlinf_embodied.sft import reject_unread_overrides

        reject_unread_overrides(overrides, typed.sft)
        actor_placement(typed)
    if module == "place":  # place searches the layout: a documented one on its command line would be refused
        from rlinf_embodied.place import UNREAD_SETTINGS as PLACE_UNREAD
        from rlinf_embodied.unread_settings import reject_unread_settings

        reject_unread_settings(overrides, PLACE_UNREAD)
    if module == "train":
        from rlinf_embodied.train import check_train_config

        if typed.runner.resume is not None and not os.path.isdir(typed.runner.resume):
            (tmp_path / "actor.pt").write_bytes(b"")  # outputs/.../iteration_000019: only its existence is checked
            typed.runner.resume = str(tmp_path)

        check_train_config(typed)  # the placement, or the checks `auto` gets before its profile


def _readme_preset_settings() -> list[str]:
    """The README's `policy=... policy.size=...` settings in backticks (the from-scratch VLA presets)."""
    text = open(os.path.join(ROOT, "README.md")).read()
    return [span for span in re.findall(r"`([^`\n]+)`", text) if re.match(r"policy=\w+ policy\.size=\S+", span)]


def test_the_readmes_from_scratch_presets_pass_the_checks_as_written():
    """Before: the README gave `policy.size=pi0-small` and `policy=openvla_oft policy.size=openvla-oft-small` as
    from-scratch presets, and both were refused for want of a checkpoint (the VLA configs set
    policy.require_checkpoint=true): the settings shown must pass as typed."""
    settings = _readme_preset_settings()
    sizes = {re.search(r"policy\.size=(\S+)", span).group(1) for span in settings}
    assert {"pi0-small", "openvla-oft-small"} <= sizes, settings
    for span in settings:
        typed = compose_config("config", ["env=libero", *span.split()])
        assert typed.policy.checkpoint is None
        check_policy_config(typed.policy)  # refused (MissingCheckpointError) without require_checkpoint=false
