"""On-policy actor-critic machinery: rollouts from vectorised environments, generalised
advantage estimation, Gaussian and categorical policies. PPO and A2C add their update."""

from __future__ import annotations

import abc
import math

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.models.policy import actor_critic, normalizer
from dltoolkit.rl.base import Algorithm

_LOG_2PI = math.log(2 * math.pi)


def log_prob_entropy(out: dict, actions, continuous: bool):
    """Log-probability of `actions` under the policy outputs, and the policy's entropy."""
    if continuous:
        log_std = out["log_std"]
        z = (actions - out["mean"]) * tf.exp(-log_std)
        logp = tf.reduce_sum(-0.5 * tf.square(z) - log_std - 0.5 * _LOG_2PI, axis=-1)
        entropy = tf.reduce_sum(log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)
        return logp, entropy
    log_probs = tf.nn.log_softmax(out["logits"])
    logp = tf.gather(log_probs, tf.cast(actions, tf.int32), batch_dims=1)
    entropy = -tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=-1)
    return logp, entropy


def gae(rewards, values, dones, last_values, gamma: float, lam: float):
    """Advantages and returns (arrays [T, N]); `dones[t]` ends the episode after step t."""
    advantages = np.zeros_like(rewards)
    running = np.zeros_like(last_values)
    for t in reversed(range(len(rewards))):
        next_values = last_values if t == len(rewards) - 1 else values[t + 1]
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * live - values[t]
        running = delta + gamma * lam * live * running
        advantages[t] = running
    return advantages, advantages + values


class ReturnScaler:
    """Divides rewards by the running std of the discounted return (reward normalisation)."""

    def __init__(self, envs: int, gamma: float):
        self.gamma = gamma
        self.returns = np.zeros(envs, np.float64)
        self.count, self.mean, self.var = 1e-4, 0.0, 1.0

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward
        n, mean, var = len(reward), self.returns.mean(), self.returns.var()
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total
        self.returns[done] = 0.0
        return (reward / math.sqrt(self.var + 1e-8)).astype(np.float32)

    def state(self) -> dict:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def restore(self, state: dict) -> None:
        self.count, self.mean, self.var = state["count"], state["mean"], state["var"]


class OnPolicy(Algorithm):
    """Collects `n_steps` from each of `n_envs` environments, then calls `_update`."""

    def _build(self) -> keras.Model:
        c, s = self.config, self.spaces
        model = actor_critic(
            s.obs_shape,
            s.obs_states,
            actions=s.actions,
            continuous=s.continuous,
            hidden=c.hidden_layers,
            activation=self.activation,
            normalize=c.normalize_obs,
            log_std_init=c.log_std_init,
        )
        self.optimizer = self._optimizer()
        self.optimizer.build(model.trainable_variables)
        self.normalizer = normalizer(model)
        self.scaler = ReturnScaler(c.n_envs, c.gamma) if c.normalize_reward else None
        return model

    def _compile(self) -> None:
        self._act = self._compiled(self._act_graph, self.config.n_envs, self._seed_spec())
        self._values = self._compiled(lambda obs: self.model(obs)["value"][:, 0], None)
        self._update_step = tf.function(self._update, jit_compile=True)
        if self.normalizer is not None:
            self._observe = tf.function(self.normalizer.update)

    @abc.abstractmethod
    def _optimizer(self) -> keras.optimizers.Optimizer:
        """The optimizer (its learning rate is set before every update)."""

    @abc.abstractmethod
    def _update(self, obs, actions, logp, advantages, returns, order, clip):
        """One update from a rollout (flat arrays); returns a dict of scalar statistics."""

    def _act_graph(self, obs, seed):
        out = self.model(obs)
        if self.spaces.continuous:
            noise = tf.random.stateless_normal(tf.shape(out["mean"]), seed)
            actions = out["mean"] + tf.exp(out["log_std"]) * noise
        else:
            uniform = tf.random.stateless_uniform(tf.shape(out["logits"]), seed, 1e-20, 1.0)
            actions = tf.argmax(
                out["logits"] - tf.math.log(-tf.math.log(uniform)), axis=-1
            )  # Gumbel-max
        logp, _ = log_prob_entropy(out, actions, self.spaces.continuous)
        return actions, logp, out["value"][:, 0]

    def _iteration(self, envs, obs):
        c = self.config
        steps, n = c.n_steps, c.n_envs
        buf_obs = np.zeros((steps, *obs.shape), self.dtype)
        buf_actions = None
        logps, values, rewards, dones = (np.zeros((steps, n), np.float32) for _ in range(4))
        for t in range(steps):
            actions, logp, value = self._act(tf.constant(obs), self._seed())
            actions = actions.numpy()
            if buf_actions is None:
                buf_actions = np.zeros((steps, *actions.shape), actions.dtype)
            buf_obs[t], buf_actions[t], logps[t], values[t] = (
                obs,
                actions,
                logp.numpy(),
                value.numpy(),
            )
            step = self._step(envs, actions)
            reward = step.reward if self.scaler is None else self.scaler(step.reward, step.done)
            cut = step.truncated & ~step.terminated
            if cut.any():  # a time limit is not a terminal state: bootstrap from its value
                reward = reward + c.gamma * np.where(
                    cut, self._values(tf.constant(step.next_obs)).numpy(), 0.0
                )
            rewards[t], dones[t] = reward, step.done
            obs = step.obs
        advantages, returns = gae(
            rewards, values, dones, self._values(tf.constant(obs)).numpy(), c.gamma, c.gae_lambda
        )
        total = steps * n
        order = np.argsort(self.rng.random((c.n_epochs, total)), axis=1).astype(np.int32)
        self.optimizer.learning_rate = self._scheduled(self.learning_rate)
        flat = (
            buf_obs.reshape(total, *obs.shape[1:]),
            buf_actions.reshape(total, *actions.shape[1:]),
            logps.reshape(-1),
            advantages.reshape(-1),
            returns.reshape(-1),
        )
        stats = self._update_step(*flat, order, np.float32(self._scheduled(c.clip_range)))
        self.stats = {k: float(v) for k, v in stats.items()}
        if self.normalizer is not None:
            self._observe(flat[0])
        return obs

    def _loss_terms(self, obs, actions, logp_old, advantages, returns):
        """New log-probabilities, their ratio to the old ones, entropy and value loss."""
        out = self.model(obs, training=True)
        logp, entropy = log_prob_entropy(out, actions, self.spaces.continuous)
        value_loss = tf.reduce_mean(tf.square(returns - out["value"][:, 0]))
        return logp, tf.exp(logp - logp_old), tf.reduce_mean(entropy), value_loss

    def _extra_state(self) -> dict:
        return {"return_scaler": self.scaler.state()} if self.scaler else {}

    def _restore_extra_state(self, state: dict) -> None:
        if self.scaler:
            self.scaler.restore(state["return_scaler"])
