"""PPO: the clipped surrogate objective, several epochs of minibatches per rollout."""

from __future__ import annotations

import keras
import tensorflow as tf

from dltoolkit.rl.on_policy import OnPolicy


class PPO(OnPolicy):
    """Proximal Policy Optimization (Schulman et al. 2017) with GAE and normalised advantages."""

    name = "ppo"

    def _optimizer(self):
        return keras.optimizers.Adam(
            self.learning_rate, epsilon=1e-5, global_clipnorm=self.max_grad_norm
        )

    def _update(self, obs, actions, logp_old, advantages, returns, order, clip):
        """Every epoch and minibatch in one graph; `order` holds each epoch's shuffle."""
        c = self.config
        batch = c.batch_size
        minibatches = tf.shape(order)[1] // batch
        totals = tf.zeros(4)
        for epoch in tf.range(c.n_epochs):
            for m in tf.range(minibatches):
                idx = order[epoch, m * batch : (m + 1) * batch]
                totals += self._minibatch_step(
                    tf.gather(obs, idx),
                    tf.gather(actions, idx),
                    tf.gather(logp_old, idx),
                    tf.gather(advantages, idx),
                    tf.gather(returns, idx),
                    clip,
                )
        means = totals / tf.cast(c.n_epochs * minibatches, tf.float32)
        return {
            "policy_loss": means[0],
            "value_loss": means[1],
            "entropy": means[2],
            "clip_fraction": means[3],
        }

    def _minibatch_step(self, obs, actions, logp_old, adv, returns, clip):
        """One clipped-objective gradient step; returns the losses and clipped fraction."""
        c = self.config
        adv = (adv - tf.reduce_mean(adv)) / (tf.math.reduce_std(adv) + 1e-8)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logp, ratio, entropy, value_loss = self._loss_terms(
                obs, actions, logp_old, adv, returns
            )
            surrogate = tf.minimum(ratio * adv, tf.clip_by_value(ratio, 1 - clip, 1 + clip) * adv)
            policy_loss = -tf.reduce_mean(surrogate)
            loss = policy_loss + c.vf_coef * value_loss - c.ent_coef * entropy
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        clipped = tf.reduce_mean(tf.cast(tf.abs(ratio - 1) > clip, tf.float32))
        return tf.stack([policy_loss, value_loss, entropy, clipped])
