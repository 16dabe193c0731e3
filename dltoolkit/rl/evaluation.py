"""Playing episodes with a fixed policy: batched evaluation and rendered play.

Every episode is capped: at `max_steps` when given, else at the environment's own step
limit (its TimeLimit, `spec.max_episode_steps`), else at `FALLBACK_EPISODE_CAP` steps, so a policy
that never ends an episode (an untrained greedy one on CliffWalking) cannot play forever."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from dltoolkit.rl.envs import make_env, make_vector_env
from dltoolkit.specs.train_agent import FALLBACK_EPISODE_CAP

# A policy maps a batch of observations (numpy) to a batch of actions (numpy).
Policy = Callable[[np.ndarray], np.ndarray]

_BATCH = 32  # episodes played side by side


@dataclass
class Episode:
    seed: int
    reward: float
    length: int
    cut: bool = False  # stopped by the cap, not by the environment
    frames: list = field(default_factory=list)


def evaluation_seeds(seed: int, episodes: int) -> list[int]:
    """Reset seeds of evaluation episodes: fixed per run seed, disjoint from training's."""
    return [1_000_000 + 1000 * seed + i for i in range(episodes)]


def episode_cap(env: gym.Env, max_steps: int | None) -> int:
    """Steps after which an episode of `env` is cut (see the module's docstring)."""
    return max_steps or (env.spec and env.spec.max_episode_steps) or FALLBACK_EPISODE_CAP


def play(
    policy: Policy,
    env_id: str,
    options: dict,
    seeds: list[int],
    dtype,
    max_steps: int | None = None,
) -> list[Episode]:
    """One episode per seed, up to 32 at a time in a vector environment."""
    episodes = []
    for start in range(0, len(seeds), _BATCH):
        batch = seeds[start : start + _BATCH]
        episodes += _play_batch(policy, env_id, options, batch, dtype, max_steps)
    return episodes


def _play_batch(policy, env_id, options, seeds, dtype, max_steps) -> list[Episode]:
    envs = make_vector_env(env_id, len(seeds), options)
    try:
        obs, _ = envs.reset(seed=seeds)
        rewards = np.zeros(len(seeds))
        lengths = np.zeros(len(seeds), np.int64)
        running = np.ones(len(seeds), bool)
        for _ in range(episode_cap(envs.envs[0], max_steps)):
            obs, reward, terminated, truncated, _ = envs.step(policy(obs.astype(dtype, copy=False)))
            rewards += np.where(running, reward, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
            if not running.any():
                break
    finally:
        envs.close()
    return [
        Episode(s, float(r), int(n), bool(c))
        for s, r, n, c in zip(seeds, rewards, lengths, running, strict=True)
    ]


def play_rendered(
    policy: Policy,
    env_id: str,
    options: dict,
    seeds: list[int],
    dtype,
    render: bool,
    max_steps: int | None = None,
) -> list[Episode]:
    """Episodes one at a time, keeping the RGB frames when `render`."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # off-screen: no display needed
    env = make_env(env_id, options, render_mode="rgb_array" if render else None)
    episodes = []
    try:
        cap = episode_cap(env, max_steps)
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            episode = Episode(seed, 0.0, 0, cut=True)
            for _ in range(cap):
                if render:
                    episode.frames.append(env.render())
                action = policy(np.asarray(obs, dtype)[None])[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                episode.reward += float(reward)
                episode.length += 1
                if terminated or truncated:
                    episode.cut = False
                    break
            if render:
                episode.frames.append(env.render())
            episodes.append(episode)
    finally:
        env.close()
    return episodes


def summarize(episodes: list[Episode]) -> dict:
    """Mean ± std return, the episode lengths and how many episodes the cap cut."""
    returns = np.array([e.reward for e in episodes])
    lengths = np.array([e.length for e in episodes])
    return {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "mean_length": float(lengths.mean()),
        "episodes": len(episodes),
        "cut_episodes": sum(e.cut for e in episodes),
    }
