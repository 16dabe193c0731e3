"""Playing episodes with a fixed policy: batched evaluation and rendered play."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dltoolkit.rl.envs import make_env, make_vector_env

# A policy maps a batch of observations (numpy) to a batch of actions (numpy).
Policy = Callable[[np.ndarray], np.ndarray]

_BATCH = 32  # episodes played side by side
_STEP_LIMIT = 100_000  # for environments without a time limit


@dataclass
class Episode:
    seed: int
    reward: float
    length: int
    frames: list = field(default_factory=list)


def evaluation_seeds(seed: int, episodes: int) -> list[int]:
    """Reset seeds of evaluation episodes: fixed per run seed, disjoint from training's."""
    return [1_000_000 + 1000 * seed + i for i in range(episodes)]


def play(policy: Policy, env_id: str, options: dict, seeds: list[int], dtype) -> list[Episode]:
    """One episode per seed, up to 32 at a time in a vector environment."""
    episodes = []
    for start in range(0, len(seeds), _BATCH):
        episodes += _play_batch(policy, env_id, options, seeds[start : start + _BATCH], dtype)
    return episodes


def _play_batch(policy, env_id, options, seeds, dtype) -> list[Episode]:
    envs = make_vector_env(env_id, len(seeds), options)
    try:
        obs, _ = envs.reset(seed=seeds)
        rewards = np.zeros(len(seeds))
        lengths = np.zeros(len(seeds), np.int64)
        running = np.ones(len(seeds), bool)
        for _ in range(_STEP_LIMIT):
            obs, reward, terminated, truncated, _ = envs.step(policy(obs.astype(dtype, copy=False)))
            rewards += np.where(running, reward, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
            if not running.any():
                break
    finally:
        envs.close()
    return [Episode(s, float(r), int(n)) for s, r, n in zip(seeds, rewards, lengths, strict=True)]


def play_rendered(
    policy: Policy, env_id: str, options: dict, seeds: list[int], dtype, render: bool
) -> list[Episode]:
    """Episodes one at a time, keeping the RGB frames when `render`."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # off-screen: no display needed
    env = make_env(env_id, options, render_mode="rgb_array" if render else None)
    episodes = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            episode = Episode(seed, 0.0, 0)
            for _ in range(_STEP_LIMIT):
                if render:
                    episode.frames.append(env.render())
                action = policy(np.asarray(obs, dtype)[None])[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                episode.reward += float(reward)
                episode.length += 1
                if terminated or truncated:
                    break
            if render:
                episode.frames.append(env.render())
            episodes.append(episode)
    finally:
        env.close()
    return episodes


def summarize(episodes: list[Episode]) -> dict:
    """Mean ± std return and the episode lengths."""
    returns = np.array([e.reward for e in episodes])
    lengths = np.array([e.length for e in episodes])
    return {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "mean_length": float(lengths.mean()),
        "episodes": len(episodes),
    }
