"""Tabular Q-learning and SARSA on discrete observation and action spaces."""

from __future__ import annotations

import abc

import keras
import numpy as np

from dltoolkit.models.policy import q_table
from dltoolkit.rl.base import Algorithm
from dltoolkit.rl.dqn import linear_epsilon


class Tabular(Algorithm):
    """A table of action values updated in numpy; the model's Embedding holds a copy."""

    needs_discrete_obs = True
    needs_discrete_actions = True
    default_learning_rate = 0.1

    def _build(self) -> keras.Model:
        model = q_table(self.spaces.obs_states, self.spaces.actions)
        self.table = np.zeros((self.spaces.obs_states, self.spaces.actions), np.float32)
        self._pending: np.ndarray | None = None  # SARSA: the action already chosen for `obs`
        return model

    def _choose(self, obs: np.ndarray) -> np.ndarray:
        """Epsilon-greedy with random tie-breaking (an all-zero row is not always action 0)."""
        c = self.config
        epsilon = linear_epsilon(
            1.0 - self.progress_left(), c.exploration_fraction, c.exploration_final_eps
        )
        q = self.table[obs]
        ties = q == q.max(axis=1, keepdims=True)
        greedy = np.argmax(ties * self.rng.random(q.shape), axis=1)
        random = self.rng.integers(0, self.spaces.actions, len(obs))
        return np.where(self.rng.random(len(obs)) < epsilon, random, greedy)

    @abc.abstractmethod
    def _target_values(self, next_obs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Value of each next state under the update rule, and SARSA's chosen next actions."""

    def _iteration(self, envs, obs):
        c = self.config
        actions = self._pending if self._pending is not None else self._choose(obs)
        step = self._step(envs, actions)
        value, chosen = self._target_values(step.next_obs)
        target = step.reward + c.gamma * (1.0 - step.terminated) * value
        alpha = self._scheduled(self.learning_rate)
        np.add.at(self.table, (obs, actions), alpha * (target - self.table[obs, actions]))
        if chosen is not None:  # the next action was chosen; in a reset env choose afresh
            self._pending = np.where(step.done, self._choose(step.obs), chosen)
        return step.obs

    def _sync_model(self) -> None:
        self.model.get_layer("q_table").embeddings.assign(self.table)

    def _from_model(self) -> None:
        self.table = keras.ops.convert_to_numpy(self.model.get_layer("q_table").embeddings).copy()


class QLearning(Tabular):
    """Off-policy: bootstraps from the best next action (Watkins 1989)."""

    name = "q-learning"

    def _target_values(self, next_obs):
        return self.table[next_obs].max(axis=1), None


class Sarsa(Tabular):
    """On-policy: bootstraps from the next action the epsilon-greedy policy actually takes."""

    name = "sarsa"

    def _target_values(self, next_obs):
        chosen = self._choose(next_obs)
        return self.table[next_obs, chosen], chosen
