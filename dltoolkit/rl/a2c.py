"""A2C: one synchronous advantage actor-critic gradient step per rollout."""

from __future__ import annotations

import keras
import tensorflow as tf

from dltoolkit.rl.on_policy import OnPolicy


class A2C(OnPolicy):
    """Advantage actor-critic (Mnih et al. 2016, synchronous) with RMSprop."""

    name = "a2c"
    default_learning_rate = 7e-4

    def _optimizer(self):
        return keras.optimizers.RMSprop(
            self.learning_rate, rho=0.99, epsilon=1e-5, global_clipnorm=self.max_grad_norm
        )

    def _update(self, obs, actions, logp_old, advantages, returns, order, clip):
        """The whole rollout is one batch (`order` and `clip` are PPO's and unused here)."""
        c = self.config
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logp, _, entropy, value_loss = self._loss_terms(
                obs, actions, logp_old, advantages, returns
            )
            policy_loss = -tf.reduce_mean(logp * advantages)
            loss = policy_loss + c.vf_coef * value_loss - c.ent_coef * entropy
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}
