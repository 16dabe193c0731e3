"""Gymnasium environments: making them with one-line errors, describing their spaces,
and the vectorised form the algorithms collect experience from."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dltoolkit.core.config import parse_value
from dltoolkit.core.errors import ConfigError


@dataclass(frozen=True)
class Spaces:
    """What a policy needs to know about an environment's observation and action spaces."""

    obs_shape: tuple[int, ...]
    obs_states: int | None  # number of states of a Discrete observation space, else None
    actions: int  # discrete actions, or dimensions of a continuous action
    continuous: bool
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()


def parse_options(text: str | None) -> dict:
    """'is_slippery=false,map_name="8x8"' -> keyword arguments for gymnasium.make."""
    options = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"env_options item '{item}' is not key=value; write e.g. "
                'env_options="is_slippery=false"'
            )
        options[key.strip()] = parse_value(raw.strip())
    return options


def make_env(env_id: str, options: dict | None = None, render_mode: str | None = None) -> gym.Env:
    """gymnasium.make with one-line errors for unknown ids, missing modules and extras."""
    kwargs = dict(options or {})
    if render_mode:
        kwargs["render_mode"] = render_mode
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as err:
        raise ConfigError(
            f"environment '{env_id}' needs an extra package that is not installed: {_one_line(err)}"
        ) from None
    except (
        gym.error.NameNotFound,
        gym.error.NamespaceNotFound,
        gym.error.VersionNotFound,
        gym.error.DeprecatedEnv,
        gym.error.UnregisteredEnv,
    ) as err:
        raise ConfigError(_unknown_env_message(env_id, err)) from None
    except ModuleNotFoundError as err:
        if ":" in env_id:
            raise ConfigError(
                f"cannot import '{env_id.partition(':')[0]}' for environment "
                f"'{env_id}' ({err.name or 'module'} not found); install the package "
                "that registers it or fix the module name"
            ) from None
        raise ConfigError(
            f"environment '{env_id}' needs the Python package '{err.name}'; "
            f"install it with: pip install {err.name}"
        ) from None
    except TypeError as err:
        if options:
            raise ConfigError(
                f"environment '{env_id}' rejected env_options {options}: {_one_line(err)}"
            ) from None
        raise


def _unknown_env_message(env_id: str, err: Exception) -> str:
    name = env_id.partition(":")[2] or env_id
    close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown environment '{env_id}' ({_one_line(err)}){hint} "
        "Use a registered gymnasium id, or 'module:EnvId' for your own environment"
    )


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()).rstrip(".") + "."


def describe(env: gym.Env) -> Spaces:
    """The Spaces of `env`; a ConfigError for spaces no policy here can read or act in."""
    obs, act = env.observation_space, env.action_space
    if isinstance(obs, gym.spaces.Discrete):
        obs_shape, states = (), int(obs.n)
    elif isinstance(obs, gym.spaces.Box):
        obs_shape, states = tuple(obs.shape), None
    else:
        raise ConfigError(
            f"observation space {obs} is not supported; the agent reads Box "
            "(arrays of numbers) or Discrete (a state index) observations"
        )
    if isinstance(act, gym.spaces.Discrete):
        return Spaces(obs_shape, states, int(act.n), False)
    if isinstance(act, gym.spaces.Box) and len(act.shape) == 1:
        return Spaces(
            obs_shape,
            states,
            int(act.shape[0]),
            True,
            tuple(map(float, act.low)),
            tuple(map(float, act.high)),
        )
    raise ConfigError(
        f"action space {act} is not supported; the agent acts in Discrete or "
        "one-dimensional Box action spaces"
    )


def observation_bounds(env_id: str, options: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) bounds of `env_id`'s Box observation space."""
    env = make_env(env_id, options)
    try:
        return env.observation_space.low, env.observation_space.high
    finally:
        env.close()


def make_vector_env(env_id: str, count: int, options: dict | None = None) -> SyncVectorEnv:
    """`count` copies stepped in this process (fastest for cheap environments); a finished
    episode resets in the same step and its last observation is in info['final_obs']."""
    return SyncVectorEnv(
        [lambda: make_env(env_id, options) for _ in range(count)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )


def observation_dtype(spaces: Spaces) -> np.dtype:
    return np.dtype(np.int32) if spaces.obs_states is not None else np.dtype(np.float32)
