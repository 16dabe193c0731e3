"""Scores of a language model: loss per token, perplexity and bits per character beside a
unigram baseline; preference accuracy and reward margins of an aligned model beside the
model it started from."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from dltoolkit.core.report import Report


@tf.function(reduce_retracing=True)
def _summed_nll(model, x, y, w):
    logits = tf.cast(model(x, training=False), tf.float32)
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)
    return tf.reduce_sum(nll * w), tf.reduce_sum(w)


def token_frequencies(ids: np.ndarray, vocabulary_size: int) -> np.ndarray:
    """Add-one smoothed frequencies of the tokens in `ids`: the unigram baseline."""
    counts = np.bincount(ids.ravel(), minlength=vocabulary_size).astype(np.float64) + 1
    return (counts / counts.sum()).astype(np.float32)


def language_scores(model, examples, batch_size: int, frequencies: np.ndarray) -> dict:
    """Mean negative log-likelihood per scored token (nats), perplexity and bits per
    character of `examples` (a Stream or Rows of data/lm_batches.py), and the same for the
    unigram baseline of the training tokens' `frequencies`."""
    total = count = baseline = 0.0
    log_freq = np.log(frequencies)
    for x, y, w in examples.scoring_batches(batch_size):
        nll, n = _summed_nll(model, x, y, w)
        total, count = total + float(nll), count + float(n)
        baseline -= float(np.sum(log_freq[y.numpy()] * w.numpy()))
    count = max(count, 1.0)
    chars = max(examples.characters, 1)
    return {
        "loss": total / count,
        "perplexity": math.exp(min(total / count, 50.0)),
        "bits_per_char": total / chars / math.log(2),
        "baseline_loss": baseline / count,
        "baseline_bits_per_char": baseline / chars / math.log(2),
        "tokens": int(count),
        "characters": int(examples.characters),
    }


def preference_scores(policy, reference, pairs, batch_size: int, beta: float) -> dict:
    """Held-out preference accuracy of `policy` (with its Wilson 95 % interval): by its
    implicit reward against `reference`, the model it was aligned from, when there is one,
    else by log-likelihood per token (chosen > rejected); the reference's log-likelihood
    accuracy beside it."""
    from dltoolkit.models.preference import binomial_interval, implicit_rewards
    from dltoolkit.models.preference import preference_accuracy as likelihood_accuracy

    arrays = (pairs.chosen, pairs.chosen_mask, pairs.rejected, pairs.rejected_mask)
    n = len(pairs.chosen)
    if reference is None:
        accuracy, correct = likelihood_accuracy(policy, *arrays, batch_size=batch_size)
        scores = {"preference_rule": "log-likelihood per token, chosen > rejected"}
    else:
        rewards = implicit_rewards(policy, reference, *arrays, beta=beta, batch_size=batch_size)
        correct = rewards["correct"]
        before, _ = likelihood_accuracy(reference, *arrays, batch_size=batch_size)
        scores = {
            "preference_rule": "implicit reward (policy against reference), chosen > rejected",
            "reward_margin": rewards["reward_margin"],
            "reference_accuracy": float(before),
        }
    low, high = binomial_interval(int(np.sum(correct)), n)
    return {
        "preference_accuracy": float(np.mean(correct)),
        "accuracy_low": low,
        "accuracy_high": high,
        "pairs": n,
        **scores,
    }


def report_scores(report: Report, metrics: dict) -> None:
    """The scores table of the report."""
    if "preference_accuracy" in metrics:
        rows = [{k: v for k, v in metrics.items() if not isinstance(v, dict)}]
        report.table("Held-out preference pairs", rows)
        return
    report.table(
        "Held-out text (nats per token; bits per character)",
        [
            {
                "model": name,
                "loss": metrics[f"{prefix}loss"],
                "bits per char": metrics[f"{prefix}bits_per_char"],
            }
            for name, prefix in (("language model", ""), ("unigram baseline", "baseline_"))
        ],
    )
