"""DQN: replay buffer, target network, double Q-learning, epsilon-greedy exploration."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.models.policy import q_network
from dltoolkit.rl.base import Algorithm
from dltoolkit.rl.envs import observation_bounds


def linear_epsilon(progress: float, fraction: float, final: float) -> float:
    """Epsilon falls linearly from 1 to `final` over the first `fraction` of training."""
    if fraction <= 0:
        return final
    return max(final, 1.0 + (final - 1.0) * progress / fraction)


class ReplayBuffer:
    """A ring buffer of at most `size` transitions in numpy arrays."""

    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminal")

    def __init__(self, size: int, obs_shape, obs_dtype):
        self.obs = np.zeros((size, *obs_shape), obs_dtype)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(size, np.int32)
        self.rewards = np.zeros(size, np.float32)
        self.terminal = np.zeros(size, np.float32)
        self.size, self.full, self.at = size, False, 0

    def __len__(self) -> int:
        return self.size if self.full else self.at

    def add(self, obs, actions, rewards, next_obs, terminal) -> None:
        idx = (self.at + np.arange(len(obs))) % self.size
        self.obs[idx], self.actions[idx], self.rewards[idx] = obs, actions, rewards
        self.next_obs[idx], self.terminal[idx] = next_obs, terminal
        self.full |= self.at + len(obs) >= self.size
        self.at = int(idx[-1] + 1) % self.size

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays when full: the bound of its share of a checkpoint."""
        return sum(getattr(self, name).nbytes for name in self.FIELDS)

    def state(self) -> dict[str, np.ndarray]:
        """The filled part of the arrays and the write position, for a checkpoint."""
        filled = {name: getattr(self, name)[: len(self)] for name in self.FIELDS}
        return {**filled, "at": np.array(self.at)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `state` (see `state`): index for index when the size is the same
        (so sampling goes on as it would have), else the newest transitions, oldest first."""
        count, at = len(state["actions"]), int(state["at"])
        if count == self.size:
            keep = np.arange(count)
        else:
            keep = ((at + np.arange(count)) % max(count, 1))[-self.size :]
            at = len(keep) % self.size
        for name in self.FIELDS:
            getattr(self, name)[: len(keep)] = state[name][keep]
        self.full, self.at = len(keep) == self.size, at

    def sample(self, rng: np.random.Generator, shape: tuple[int, int]):
        idx = rng.integers(0, len(self), size=shape)
        return (
            self.obs[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_obs[idx],
            self.terminal[idx],
        )


class DQN(Algorithm):
    """Deep Q-Network (Mnih et al. 2015) with double Q-learning (van Hasselt et al. 2016)."""

    name = "dqn"
    needs_discrete_actions = True
    default_learning_rate = 1e-4
    default_activation = "relu"
    default_max_grad_norm = 10.0

    def _build(self) -> keras.Model:
        c, s = self.config, self.spaces
        bounds = None
        if c.scale_obs and s.obs_states is None:
            bounds = observation_bounds(c.env, self.env_options)

        def make():
            return q_network(
                s.obs_shape,
                s.obs_states,
                actions=s.actions,
                hidden=c.hidden_layers,
                activation=self.activation,
                bounds=bounds,
            )

        model, self.target = make(), make()
        self.target.set_weights(model.get_weights())
        self.optimizer = keras.optimizers.Adam(
            self.learning_rate, global_clipnorm=self.max_grad_norm
        )
        self.optimizer.build(model.trainable_variables)
        self.buffer = ReplayBuffer(c.buffer_size, s.obs_shape, self.dtype)
        self._since_target = 0
        return model

    def _compile(self) -> None:
        self._act = self._compiled(
            self._act_graph, self.config.n_envs, tf.TensorSpec([], tf.float32), self._seed_spec()
        )
        self._train_steps = tf.function(self._update, jit_compile=True)
        self._sync_target = tf.function(self._copy_to_target)

    def _act_graph(self, obs, epsilon, seed):
        greedy = tf.argmax(self.model(obs)["q_values"], axis=-1, output_type=tf.int32)
        n = tf.shape(greedy)[0]
        explore = tf.random.stateless_uniform([n], seed) < epsilon
        random = tf.random.stateless_uniform(
            [n], seed + 1, maxval=self.spaces.actions, dtype=tf.int32
        )
        return tf.where(explore, random, greedy)

    def _update(self, obs, actions, rewards, next_obs, terminal):
        """One gradient step per leading index of the sampled batches (Huber loss)."""
        gamma = self.config.gamma
        variables = self.model.trainable_variables
        chooser = self.model if self.config.double_q else self.target
        loss_sum = tf.zeros(())
        for g in tf.range(tf.shape(obs)[0]):
            best = tf.argmax(chooser(next_obs[g])["q_values"], axis=-1, output_type=tf.int32)
            next_q = tf.gather(self.target(next_obs[g])["q_values"], best, batch_dims=1)
            target = rewards[g] + gamma * (1.0 - terminal[g]) * next_q
            with tf.GradientTape() as tape:
                q = tf.gather(
                    self.model(obs[g], training=True)["q_values"], actions[g], batch_dims=1
                )
                loss = tf.reduce_mean(keras.losses.huber(target[:, None], q[:, None]))
            grads = tape.gradient(loss, variables)
            self.optimizer.apply_gradients(zip(grads, variables, strict=True))
            loss_sum += loss
        return loss_sum / tf.cast(tf.shape(obs)[0], tf.float32)

    def _copy_to_target(self):
        for source, target in zip(self.model.weights, self.target.weights, strict=True):
            target.assign(source)

    def epsilon(self) -> float:
        c = self.config
        return linear_epsilon(
            1.0 - self.progress_left(), c.exploration_fraction, c.exploration_final_eps
        )

    def _iteration(self, envs, obs):
        c = self.config
        for _ in range(c.train_freq):
            actions = self._act(
                tf.constant(obs), tf.constant(self.epsilon(), tf.float32), self._seed()
            ).numpy()
            step = self._step(envs, actions)
            self.buffer.add(obs, actions, step.reward, step.next_obs, step.terminated)
            obs = step.obs
            self._since_target += c.n_envs
            if self._since_target >= c.target_update_interval:  # as SB3: counted in env steps,
                self._sync_target()  # so the updates after this collection see the new target
                self._since_target = 0
        if self.steps >= c.learning_starts and len(self.buffer) >= c.batch_size:
            self.optimizer.learning_rate = self._scheduled(self.learning_rate)
            batches = self.buffer.sample(self.rng, (c.gradient_steps, c.batch_size))
            loss = self._train_steps(*batches)
            self.stats = {"loss": float(loss), "epsilon": self.epsilon()}
        return obs

    def _variables(self) -> list:
        return super()._variables() + list(self.target.weights)

    def _extra_state(self) -> dict:
        return {"since_target": self._since_target}

    def _restore_extra_state(self, state: dict) -> None:
        self._since_target = state["since_target"]

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {f"replay_{k}": v for k, v in self.buffer.state().items()}

    def _restore_extra_arrays(self, saved) -> None:
        self.buffer.restore({k.removeprefix("replay_"): v for k, v in saved.items()})

    def position(self) -> str:
        return (
            f"{super().position()} with {len(self.buffer)} of {self.buffer.size} transitions "
            "in the replay buffer"
        )
