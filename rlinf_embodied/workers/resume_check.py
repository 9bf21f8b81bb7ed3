"""Say why a training checkpoint cannot continue in this run before its weights are loaded.

`runner.resume` / `sft.resume` restore the actor's full state (weights and optimizer), so the run must build the
same model. A run whose settings changed (`policy.overrides.hidden_dim`, another env's state width) would otherwise
fail inside `load_state_dict` with "size mismatch for critic.6.weight", naming neither setting.
check_resume_fits_run says so before Ray starts where the checkpoint's records tell it (train.py's up-front checks);
check_same_model after the weights are read, for what they alone tell.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping

import torch

from ..policies.base import CONFIG_FILE, WEIGHTS_FILE, dirs_holding, not_a_directory
from ..policies.registry import plain_config_value

logger = logging.getLogger(__name__)


def check_resume_directory(directory: str, setting: str) -> str:
    """`directory`'s actor.pt, or a FileNotFoundError naming `setting` (the config key that gave it) and the
    resumable checkpoints below `directory` (a run directory holds them at checkpoints/<name>)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{setting}={directory!r} {not_a_directory(directory)}: pass a checkpoints/<name> directory of an earlier "
            "run (iteration_XXXXXX, final, or the one Ctrl-C saved)"
        )
    path = os.path.join(directory, "actor.pt")
    if not os.path.isfile(path):
        hint = (
            checkpoint_above(directory, setting) or saved_policy_hint(directory, setting) or resumable_below(directory)
        )
        raise FileNotFoundError(f"{setting}={directory!r} holds no actor.pt checkpoint{hint}")
    return path


def saved_policy_hint(directory: str, setting: str) -> str:
    """`"; ..."` where `directory` is a policy written by save_pretrained (config.json and model.safetensors: its
    weights alone, no optimizer or step to continue), pointing to policy.checkpoint; else "" (before: only "holds no
    actor.pt checkpoint")."""
    if not all(os.path.isfile(os.path.join(directory, name)) for name in (CONFIG_FILE, WEIGHTS_FILE)):
        return ""
    return (
        f"; it is a policy saved by save_pretrained (its weights alone, nothing of a run to continue): start a new "
        f"run from it with policy.checkpoint={directory}, or pass {setting} a checkpoints/<name> directory"
    )


def checkpoint_above(directory: str, setting: str, files: tuple[str, ...] = ("actor.pt",)) -> str:
    """`"; ..."` naming the parent of `directory` where that is a checkpoint (it holds `files`), else "": a
    checkpoint's `policy` subdirectory (its weights alone, what policy.checkpoint takes) given to `setting`
    (before: only "holds no actor.pt checkpoint")."""
    parent = os.path.dirname(os.path.normpath(directory)) or "."
    if not all(os.path.isfile(os.path.join(parent, name)) for name in files):
        return ""
    return (
        f"; it is the policy directory inside the checkpoint {parent!r} (the weights alone, for policy.checkpoint): "
        f"pass the checkpoint itself, {setting}={parent}"
    )


def reject_sft_checkpoint(directory: str, setting: str) -> None:
    """An SFT checkpoint (sft.json beside its actor.pt) holds SFT's step and optimizer, not an RL run's: resumed as
    one, SFT's step 2000 read as RL iteration 2000. RL starts from its weights instead."""
    if os.path.isfile(os.path.join(directory, "sft.json")):
        raise ValueError(
            f"{setting}={directory!r} is an SFT checkpoint (it holds sft.json), and {setting} continues an RL run: "
            f"start RL from its weights with policy.checkpoint={os.path.join(directory, 'policy')}"
        )


def resumable_below(directory: str, files: tuple[str, ...] = ("actor.pt",)) -> str:
    """`"; checkpoints below it: ..."` for the checkpoints (directories holding `files`) under a run directory, else
    ""."""
    found = dirs_holding(directory, files, max_depth=2)
    if not found:
        return ""
    shown = ", ".join(repr(path) for path in found[-4:])
    return f"; checkpoints below it: {shown}" + (f" (the last 4 of {len(found)})" if len(found) > 4 else "")


def check_same_model(directory: str, setting: str, saved: Mapping[str, torch.Tensor], policy: Any) -> None:
    """Raise unless `saved` (the checkpoint's full state dict) has this policy's keys and shapes; the error names
    the policy config fields that differ from the checkpoint's policy/config.json (its weights' settings)."""
    current = policy.state_dict()
    reshaped = [key for key in saved if key in current and tuple(saved[key].shape) != tuple(current[key].shape)]
    missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    if not (reshaped or missing or unexpected):
        return
    parts = [f"{key} {tuple(saved[key].shape)} -> {tuple(current[key].shape)}" for key in reshaped[:3]]
    parts += [f"missing {missing[:3]}"] if missing else []
    parts += [f"unexpected {unexpected[:3]}"] if unexpected else []
    from ..policies.registry import saved_policy_config

    saved_config = saved_policy_config(os.path.join(directory, "policy"))  # (None without one)
    differing = _differing_settings(saved_config, policy.config.to_dict()) if saved_config else []
    raise ValueError(different_model_message(directory, setting, f" ({'; '.join(parts)})", differing))


def different_model_message(directory: str, setting: str, shapes: str, differing: list[str], note: str = "") -> str:
    """check_same_model's error (after the weights were read: `shapes` names tensors) and check_resume_fits_run's
    (before any worker starts, from the checkpoint's config.json: `shapes` empty)."""
    settings = f"; the policy settings that differ: {'; '.join(differing)}" if differing else ""
    return (
        f"{setting}={directory!r} holds a different model than this run builds{shapes}{settings}{note}: resume with "
        f"the settings it was trained with, or start a new run from its weights with "
        f"policy.checkpoint={os.path.join(directory, 'policy')} where they still fit"
    )


def other_policy_message(directory: str, setting: str, trained: str, asked: str) -> str:
    """A checkpoint of another policy than policy.name (the actor says the same after reading actor.pt)."""
    return f"{setting}={directory!r} trained policy {trained!r}, this run asks for {asked!r}"


def _differing_settings(
    saved: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str] | None = None
) -> list[str]:
    """For each of `keys` (default: all saved) that differs: "<key>: checkpoint <saved>, this run <current>"."""
    return [
        f"{key}: checkpoint {saved[key]!r}, this run {current[key]!r}" for key in _differing_keys(saved, current, keys)
    ]


def _differing_keys(saved: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str] | None) -> list[str]:
    return [
        key
        for key in sorted(saved if keys is None else keys)
        if key in saved and key in current and plain_config_value(saved[key]) != plain_config_value(current[key])
    ]


def check_resume_fits_run(directory: str, setting: str, policy_cfg: Any, env_cfg: Any) -> None:
    """Before any worker starts: refuse a checkpoint this run cannot continue, from what the checkpoint records.
    Its policy/config.json names the policy and the settings that shape its weights (the config class's
    `architecture_fields`), compared with the config this run will build (policy.name, size, overrides,
    policy.checkpoint; a new policy's action_dim / state_dim are the env's). Before: the actor's load_checkpoint
    said the same after every worker had started (about a minute on 2 CPU cores; minutes for a VLA). What no record
    tells (a policy without architecture_fields, the tensors' shapes) stays with check_same_model there."""
    from ..policies.registry import policy_class, saved_policy_config
    from .policy_loading import resolved_policy_config

    saved = saved_policy_config(os.path.join(directory, "policy"))
    if saved is None:  # no config.json: the actor's checks
        return
    if saved["policy"] != policy_cfg.name:
        raise ValueError(
            f"{other_policy_message(directory, setting, saved['policy'], policy_cfg.name)}: select "
            f"policy={saved['policy']} (the config group), or start a new run of {policy_cfg.name}"
        )
    fields = getattr(policy_class(policy_cfg.name).config_class, "architecture_fields", ())
    if not fields:
        return
    dims, env_note = _run_policy_dims(directory, policy_cfg, env_cfg, saved, fields)
    try:
        config = resolved_policy_config(policy_cfg, dims["action_dim"], dims["state_dim"])
    except (ValueError, TypeError):  # a config the workers refuse, naming it with the env's dims
        return
    if config is None:  # policy.checkpoint in an upstream layout: converted at load
        return
    current = config.to_dict()
    changed = _differing_keys(saved, current, fields)
    if changed:
        note = env_note if set(changed) & set(dims) else ""
        differing = _differing_settings(saved, current, changed)
        raise ValueError(different_model_message(directory, setting, "", differing, note))


def _run_policy_dims(
    directory: str, policy_cfg: Any, env_cfg: Any, saved: Mapping[str, Any], fields: Iterable[str]
) -> tuple[dict[str, Any], str]:
    """The action_dim / state_dim this run's policy config resolves with, and a note on the env the checkpoint was
    trained on where they are another env's. A new policy takes its env's: the checkpoint's own where the env is the
    one it trained on (its env_actions.json; the control mode is checked before) or where it recorded none, else
    read off the env, built once in a child process (probed_env_dims). With policy.checkpoint, its config.json
    sets them (resolved_policy_config reads no env dims)."""
    from ..envs.action_settings import read_action_settings, trained_env_note

    dims = {"action_dim": saved.get("action_dim"), "state_dim": saved.get("state_dim") or 0}
    if policy_cfg.checkpoint is not None or not {"action_dim", "state_dim"} & set(fields):
        return dims, ""
    policy_dir = os.path.join(directory, "policy")
    record = read_action_settings(policy_dir)
    if record is None or record.get("env_id") == env_cfg.id:
        return dims, ""
    probed = probed_env_dims(env_cfg)
    if probed is None:
        return dims, ""
    return probed, f"; this run's env {env_cfg.id} sets action_dim and state_dim{trained_env_note(policy_dir)}"


PROBE_TIMEOUT_S = 120.0


def probed_env_dims(env_cfg: Any, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, int] | None:
    """action_dim and state_dim (env_spec's) of one env of env_cfg (gym.make: the id's single env, with env.obs_mode
    and env.kwargs less the options of batching), built in a spawned child process: the driver builds no physics
    scene or render device before Ray starts. None where the id builds no single env (e.g. IsaacLab, ManiSkill's GPU physics) or
    not within timeout_s: the env workers read the dims then."""
    import multiprocessing as mp

    from ..envs.registration import VECTOR_ONLY_OPTIONS

    kwargs = {key: value for key, value in dict(env_cfg.kwargs).items() if key not in VECTOR_ONLY_OPTIONS}
    context = mp.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(
        target=_send_env_dims, args=(env_cfg.id, env_cfg.obs_mode, kwargs, send), name="env-dims-probe"
    )
    process.start()
    send.close()
    result: Any = f"no answer within {timeout_s:.0f} s"
    try:
        if receive.poll(timeout_s):
            result = receive.recv()
    except EOFError:  # it died before answering
        result = None
    finally:
        receive.close()
        process.join(timeout=10.0)
        if process.is_alive():
            process.kill()
            process.join()
    if result is None:
        result = f"the process ended with exit code {process.exitcode}"
    if isinstance(result, dict):
        return result
    logger.info("could not read env %s's dims before start-up (the env workers read them): %s", env_cfg.id, result)
    return None


def _send_env_dims(env_id: str, obs_mode: str, kwargs: dict[str, Any], send: Any) -> None:
    """probed_env_dims's child: the dims, or the error's text."""
    from types import SimpleNamespace

    try:
        import gymnasium as gym

        import rlinf_embodied.envs  # noqa: F401  (registers our ids)

        from ..envs.spec import env_spec

        env = gym.make(env_id, obs_mode=obs_mode, **kwargs)
        try:  # a vector env's single_* spaces are its envs' spaces
            spec = env_spec(
                SimpleNamespace(single_observation_space=env.observation_space, single_action_space=env.action_space)
            )
        finally:
            env.close()
        send.send({"action_dim": spec["action_dim"], "state_dim": spec["state_dim"]})
    except Exception as error:  # noqa: BLE001  (reported, and the workers say it again)
        send.send(f"{type(error).__name__}: {error}")
    finally:
        send.close()
