"""Preference alignment of a causal language model by DPO (Rafailov et al., 2023), and the
preference-accuracy scores that judge it.

A causal LM here is any keras.Model that maps int32 ids (B, T) to logits (B, T, V). A
sequence is scored on its masked tokens: `ids` (B, T + 1) hold the whole text, `mask` (B, T)
is 1 where the next token (`ids[:, 1:]`) is part of the response. DPO trains the policy so
that its log-probability ratio to a frozen reference is larger on the chosen response than
on the rejected one; the implicit reward of a response is beta * (log pi - log ref).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from dltoolkit.core.errors import ConfigError
from dltoolkit.core.replicas import gradient_loss


def sequence_log_probs(model, ids, mask, training=False):
    """(sum of log p(token) over the masked tokens (B,), masked token counts (B,)): the model
    reads ids[:, :-1] and is scored on ids[:, 1:], in float32 whatever its dtype policy."""
    logits = ops.cast(model(ids[:, :-1], training=training), "float32")
    targets = ops.cast(ids[:, 1:], "int32")
    picked = ops.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    token_log_probs = picked - ops.logsumexp(logits, axis=-1)
    mask = ops.cast(mask, "float32")
    return ops.sum(token_log_probs * mask, axis=-1), ops.sum(mask, axis=-1)


_SIDES = ("chosen", "rejected")


def _pair_log_probs(model, batch, training):
    """(summed log-probs, masked token counts) of the chosen and the rejected sequences, in one
    pass of `model`: both sides padded on the right to a common length (a causal model ignores
    the padding); each of the two is a (chosen, rejected) pair of (B,) tensors."""
    length = tf.maximum(tf.shape(batch["chosen"])[1], tf.shape(batch["rejected"])[1])

    def joined(key, dtype, width):
        parts = [tf.cast(batch[key.format(side)], dtype) for side in _SIDES]
        return tf.concat([tf.pad(p, [[0, 0], [0, width - tf.shape(p)[1]]]) for p in parts], 0)

    ids, mask = joined("{}", tf.int32, length), joined("{}_mask", tf.float32, length - 1)
    sums, counts = sequence_log_probs(model, ids, mask, training=training)
    return tf.split(sums, 2), tf.split(counts, 2)


class DPOTrainer(keras.Model):
    """Direct preference optimisation of `policy` against a frozen `reference` copy.

    `fit`/`evaluate` take batches {"chosen": ids, "chosen_mask": mask, "rejected": ids,
    "rejected_mask": mask}; the loss is -log sigmoid(beta * h), h the chosen-minus-rejected
    difference of log-ratios, with `label_smoothing` eps the conservative variant
    -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h), and with `sft_weight` alpha the
    policy's mean negative log-likelihood per chosen-response token added, times alpha (RPO,
    Pang et al., 2024), which keeps the chosen responses likely. Only the policy is trained;
    it runs without dropout unless `dropout` (as TRL's default), so that at the start policy
    and reference agree exactly and the loss is log 2.
    """

    REPORTED = ("loss", "preference_accuracy", "reward_margin", "chosen_reward", "rejected_reward")

    def __init__(
        self,
        policy,
        reference,
        beta=0.1,
        label_smoothing=0.0,
        sft_weight=0.0,
        dropout=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if beta <= 0:
            raise ConfigError(f"beta must be positive, got {beta}")
        if not 0 <= label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
        if sft_weight < 0:
            raise ConfigError(f"sft_weight must be >= 0, got {sft_weight}")
        if reference is policy:
            raise ConfigError("the reference must be a separate copy of the policy")
        self.policy, self.reference = policy, reference
        self.reference.trainable = False
        self.beta, self.label_smoothing = float(beta), float(label_smoothing)
        self.sft_weight = float(sft_weight)
        self.dropout = bool(dropout)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.REPORTED}

    @classmethod
    def from_policy(cls, policy, **kwargs) -> DPOTrainer:
        """A trainer whose reference is a frozen clone of `policy` (architecture and weights);
        create it under the strategy scope the policy was built in."""
        reference = keras.models.clone_model(policy)
        for model in (policy, reference):
            if not model.built:
                model(ops.zeros((1, 1), "int32"))
        reference.set_weights(policy.get_weights())
        trainer = cls(policy, reference, **kwargs)
        ids, mask = ops.zeros((1, 3), "int32"), ops.ones((1, 2), "float32")
        trainer({"chosen": ids, "chosen_mask": mask, "rejected": ids, "rejected_mask": mask})
        return trainer  # built, as checkpointing (BackupAndRestore) needs

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, batch, training=None):
        """Summed response log-probs (policy and reference, chosen and rejected) and the chosen
        responses' token counts, each (B,)."""
        (policy_chosen, policy_rejected), (chosen_tokens, _) = _pair_log_probs(
            self.policy, batch, training
        )
        (reference_chosen, reference_rejected), _ = _pair_log_probs(self.reference, batch, False)
        return {
            "policy_chosen": policy_chosen,
            "policy_rejected": policy_rejected,
            "reference_chosen": tf.stop_gradient(reference_chosen),
            "reference_rejected": tf.stop_gradient(reference_rejected),
            "chosen_tokens": chosen_tokens,
        }

    def _dpo_terms(self, batch, training):
        """(per-pair DPO losses, implicit rewards of the chosen and the rejected responses)."""
        log_probs = self(batch, training=training)
        chosen = self.beta * (log_probs["policy_chosen"] - log_probs["reference_chosen"])
        rejected = self.beta * (log_probs["policy_rejected"] - log_probs["reference_rejected"])
        margin = chosen - rejected
        eps = self.label_smoothing
        losses = (1.0 - eps) * ops.softplus(-margin) + eps * ops.softplus(margin)
        if self.sft_weight:
            chosen_nll = -log_probs["policy_chosen"] / ops.maximum(log_probs["chosen_tokens"], 1.0)
            losses = losses + self.sft_weight * chosen_nll
        return losses, chosen, rejected

    def _record(self, losses, chosen, rejected):
        values = {
            "loss": losses,
            "preference_accuracy": ops.cast(chosen > rejected, "float32"),
            "reward_margin": chosen - rejected,
            "chosen_reward": chosen,
            "rejected_reward": rejected,
        }
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data):
        batch, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses, chosen, rejected = self._dpo_terms(batch, training=self.dropout)
            scaled = gradient_loss(ops.mean(losses), self.optimizer)
        variables = self.policy.trainable_variables
        self.optimizer.apply_gradients(
            zip(tape.gradient(scaled, variables), variables, strict=True)
        )
        return self._record(losses, chosen, rejected)

    def test_step(self, data):
        batch, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._record(*self._dpo_terms(batch, training=False))


def _scorer(models, batch_size: int):
    """numpy (ids, mask) -> each model's `sequence_log_probs` sums, and the token counts,
    `batch_size` rows at a time in one traced function."""

    @tf.function(reduce_retracing=True)
    def score(ids, mask):
        scores = [sequence_log_probs(model, ids, mask) for model in models]
        return [sums for sums, _ in scores], scores[0][1]

    def scored(ids, mask):
        parts = [
            score(
                tf.constant(ids[start : start + batch_size], tf.int32),
                tf.constant(mask[start : start + batch_size], tf.float32),
            )
            for start in range(0, len(ids), batch_size)
        ]
        sums = [np.concatenate([p[0][i].numpy() for p in parts]) for i in range(len(models))]
        return sums, np.concatenate([p[1].numpy() for p in parts])

    return scored


def preference_accuracy(model, chosen, chosen_mask, rejected, rejected_mask, batch_size=32):
    """(share of pairs, per-pair bool array) where the model's mean log-probability per
    response token is higher for the chosen response: the score of a model before alignment."""
    scored = _scorer([model], batch_size)

    def per_token(ids, mask):
        (sums,), counts = scored(ids, mask)
        return sums / np.maximum(counts, 1.0)

    correct = per_token(chosen, chosen_mask) > per_token(rejected, rejected_mask)
    return float(correct.mean()), correct


def implicit_rewards(
    policy, reference, chosen, chosen_mask, rejected, rejected_mask, beta=0.1, batch_size=32
) -> dict:
    """DPO's implicit rewards beta * (log pi - log ref) of each pair, as numpy:
    `chosen_reward`, `rejected_reward`, `margin` and `correct` (chosen > rejected) per pair,
    with their summaries `accuracy` and `reward_margin` (the mean margin)."""
    scored = _scorer([policy, reference], batch_size)

    def reward(ids, mask):
        (policy_sums, reference_sums), _ = scored(ids, mask)
        return beta * (policy_sums - reference_sums)

    chosen_reward, rejected_reward = reward(chosen, chosen_mask), reward(rejected, rejected_mask)
    margin = chosen_reward - rejected_reward
    return {
        "chosen_reward": chosen_reward,
        "rejected_reward": rejected_reward,
        "margin": margin,
        "correct": margin > 0,
        "accuracy": float(np.mean(margin > 0)),
        "reward_margin": float(np.mean(margin)),
    }


def binomial_interval(successes: int, trials: int, confidence=0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion of `successes` in `trials`."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ConfigError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = successes / trials
    denominator = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
