"""Reinforcement learning for the agent recipe: environments, algorithms, evaluation."""

from dltoolkit.rl.a2c import A2C
from dltoolkit.rl.base import Algorithm
from dltoolkit.rl.dqn import DQN
from dltoolkit.rl.ppo import PPO
from dltoolkit.rl.tabular import QLearning, Sarsa

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (PPO, A2C, DQN, QLearning, Sarsa)
}

__all__ = ["ALGORITHMS", "Algorithm"]
