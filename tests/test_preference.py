"""DPO on a tiny causal LM: prompts of random symbols, a separator, a two-token response.
Pretraining sees random responses; the preferred ones repeat the prompt's last symbol."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit.core.config import TrainConfig
from dltoolkit.core.errors import ConfigError
from dltoolkit.core.optim import build_optimizer
from dltoolkit.core.rundir import RunDir
from dltoolkit.core.training import Phase, fit_phases
from dltoolkit.models.preference import (
    DPOTrainer,
    binomial_interval,
    implicit_rewards,
    preference_accuracy,
    sequence_log_probs,
)

TESTS = Path(__file__).resolve().parent
SEPARATOR, FIRST_SYMBOL, VOCABULARY = 1, 2, 10
PROMPT, RESPONSE = 4, 2
LENGTH = PROMPT + 1 + RESPONSE


@keras.saving.register_keras_serializable(package="dltoolkit_tests")
class TinyCausalLM(keras.Model):
    """Learned positions, one pre-norm causal Transformer block, a vocabulary head:
    a subclassed model, as the GPT network is, so `from_policy` clones it by its config."""

    def __init__(self, width=32, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.width, self.dropout = width, dropout
        self.embed = keras_hub.layers.TokenAndPositionEmbedding(VOCABULARY, 2 * LENGTH, width)
        self.block = keras_hub.layers.TransformerDecoder(
            2 * width, 2, dropout=dropout, normalize_first=True
        )
        self.head = keras.layers.Dense(VOCABULARY)

    def call(self, ids, training=None):
        return self.head(self.block(self.embed(ids), training=training))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "dropout": self.dropout}


def causal_lm(seed=0, dropout=0.0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = TinyCausalLM(dropout=dropout)
    model(np.zeros((1, LENGTH - 1), "int32"))
    return model


def sequences(prompts, responses):
    separators = np.full((len(prompts), 1), SEPARATOR)
    return np.concatenate([prompts, separators, responses], 1).astype("int32")


def response_mask(count):
    mask = np.zeros((count, LENGTH - 1), "float32")
    mask[:, PROMPT:] = 1.0  # targets ids[:, PROMPT + 1:], the response
    return mask


def preference_pairs(count, rng) -> dict:
    prompts = rng.integers(FIRST_SYMBOL, VOCABULARY, (count, PROMPT))
    last = prompts[:, -1:]
    others = rng.integers(FIRST_SYMBOL, VOCABULARY - 1, (count, RESPONSE))
    others = others + (others >= last)  # any symbol but the prompt's last
    mask = response_mask(count)
    return {
        "chosen": sequences(prompts, np.repeat(last, RESPONSE, 1)),
        "chosen_mask": mask,
        "rejected": sequences(prompts, others),
        "rejected_mask": mask,
    }


def copy_of(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy(np.zeros((1, LENGTH - 1), "int32"))
    copy.set_weights(model.get_weights())
    return copy


@pytest.fixture(scope="module")
def pretrained():
    """A causal LM trained briefly on rule-free text: it knows the layout, not the preference."""
    rng = np.random.default_rng(0)
    texts = sequences(
        rng.integers(FIRST_SYMBOL, VOCABULARY, (1024, PROMPT)),
        rng.integers(FIRST_SYMBOL, VOCABULARY, (1024, RESPONSE)),
    )
    model = causal_lm()
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(texts[:, :-1], texts[:, 1:], batch_size=64, epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(1)
    return preference_pairs(512, rng), preference_pairs(256, rng)


def test_sequence_log_probs_agrees_with_numpy(pretrained, pairs):
    batch = {k: v[:8] for k, v in pairs[1].items()}
    ids, mask = batch["rejected"], batch["rejected_mask"].copy()
    mask[0, -1] = 0.0  # a partial mask is summed over its own tokens only
    sums, counts = sequence_log_probs(pretrained, ids, mask)
    logits = pretrained.predict(ids[:, :-1], verbose=0).astype("float64")
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_softmax, ids[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(sums, (picked * mask).sum(1), rtol=1e-5)
    np.testing.assert_array_equal(counts, mask.sum(1))


def test_trainer_scores_sides_of_different_lengths(pretrained, pairs):
    batch = {k: v[:8] for k, v in pairs[1].items()}
    longer = np.concatenate([batch["rejected"], batch["chosen"][:, -3:]], 1)
    longer_mask = np.concatenate([batch["rejected_mask"], np.ones((8, 3), "float32")], 1)
    batch.update(rejected=longer, rejected_mask=longer_mask)
    scores = DPOTrainer.from_policy(pretrained)(batch)
    for side, ids, mask in (
        ("chosen", batch["chosen"], batch["chosen_mask"]),
        ("rejected", longer, longer_mask),
    ):
        alone, _ = sequence_log_probs(pretrained, ids, mask)
        np.testing.assert_allclose(scores[f"policy_{side}"], alone, rtol=1e-5)
        np.testing.assert_allclose(scores[f"reference_{side}"], alone, rtol=1e-5)


def test_dpo_learns_the_preference_under_a_strategy(pretrained, pairs):
    train, held_out = pairs
    before, _ = preference_accuracy(pretrained, **held_out)
    dataset = tf.data.Dataset.from_tensor_slices(train).shuffle(512, seed=0).batch(32).repeat()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        trainer = DPOTrainer.from_policy(copy_of(pretrained), beta=0.1)
        trainer.compile(keras.optimizers.Adam(2e-3))
    first = trainer.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0).history
    assert first["loss"][0] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference
    assert first["preference_accuracy"][0] == 0.0  # equal rewards are not a preference
    history = trainer.fit(dataset, epochs=2, steps_per_epoch=16, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] < math.log(2)

    for frozen, original in zip(trainer.reference.weights, pretrained.weights, strict=True):
        np.testing.assert_array_equal(frozen.numpy(), original.numpy())
    moved = [
        not np.array_equal(w.numpy(), o.numpy())
        for w, o in zip(trainer.policy.weights, pretrained.weights, strict=True)
    ]
    assert all(moved)

    aligned = implicit_rewards(trainer.policy, trainer.reference, **held_out, beta=0.1)
    after, correct = preference_accuracy(trainer.policy, **held_out)
    assert before < 0.7
    assert aligned["accuracy"] > 0.9 and after > 0.9 and correct.shape == (256,)
    assert aligned["reward_margin"] > 0.5
    np.testing.assert_allclose(
        aligned["margin"], aligned["chosen_reward"] - aligned["rejected_reward"]
    )
    evaluated = trainer.evaluate(
        tf.data.Dataset.from_tensor_slices(held_out).batch(64), verbose=0, return_dict=True
    )
    assert evaluated["preference_accuracy"] == pytest.approx(aligned["accuracy"])
    assert evaluated["reward_margin"] == pytest.approx(aligned["reward_margin"], rel=1e-4)


def test_conservative_loss_matches_the_implicit_rewards(pretrained, pairs):
    first = {k: v[:64] for k, v in pairs[0].items()}
    batches = tf.data.Dataset.from_tensor_slices(first).batch(32)
    trainer = DPOTrainer.from_policy(copy_of(pretrained), beta=0.5, label_smoothing=0.2)
    trainer.compile(keras.optimizers.SGD(0.1))
    trainer.fit(batches, verbose=0)
    scores = trainer.evaluate(batches, verbose=0, return_dict=True)
    rewards = implicit_rewards(trainer.policy, trainer.reference, **first, beta=0.5)
    margin = rewards["margin"]
    smoothed = 0.8 * np.logaddexp(0, -margin) + 0.2 * np.logaddexp(0, margin)
    assert np.abs(margin).min() > 0  # one step moved every pair's margin away from 0
    assert scores["loss"] == pytest.approx(smoothed.mean(), rel=1e-4)
    assert scores["chosen_reward"] == pytest.approx(rewards["chosen_reward"].mean(), abs=1e-5)
    assert scores["rejected_reward"] == pytest.approx(rewards["rejected_reward"].mean(), abs=1e-5)


def test_sft_weight_adds_the_chosen_responses_loss_and_keeps_them_likely(pretrained, pairs):
    first = {k: v[:128] for k, v in pairs[0].items()}
    batches = tf.data.Dataset.from_tensor_slices(first).batch(32)
    chosen_log_prob, trainers = [], []
    for sft_weight in (0.0, 1.0):
        trainer = DPOTrainer.from_policy(copy_of(pretrained), beta=0.1, sft_weight=sft_weight)
        trainer.compile(keras.optimizers.Adam(2e-3))
        trainer.fit(batches, epochs=3, verbose=0)
        sums, counts = sequence_log_probs(trainer.policy, first["chosen"], first["chosen_mask"])
        chosen_log_prob.append(float(np.sum(sums) / np.sum(counts)))
        trainers.append(trainer)
    assert chosen_log_prob[1] > chosen_log_prob[0] + 0.1  # RPO: the chosen stay likely

    trainer = trainers[1]
    scores = trainer.evaluate(batches, verbose=0, return_dict=True)
    rewards = implicit_rewards(trainer.policy, trainer.reference, **first, beta=0.1)
    sums, counts = sequence_log_probs(trainer.policy, first["chosen"], first["chosen_mask"])
    expected = np.logaddexp(0, -rewards["margin"]) - np.asarray(sums) / np.asarray(counts)
    assert scores["loss"] == pytest.approx(expected.mean(), rel=1e-4)
    with pytest.raises(ConfigError, match="sft_weight"):
        DPOTrainer.from_policy(copy_of(pretrained), sft_weight=-1.0)


def test_policy_dropout_is_off_unless_asked_for(pairs):
    batches = tf.data.Dataset.from_tensor_slices(pairs[0]).take(32).batch(32)
    losses = []
    for dropout in (False, True):
        trainer = DPOTrainer.from_policy(causal_lm(dropout=0.5), dropout=dropout)
        trainer.compile(keras.optimizers.SGD(0.0))
        losses.append(trainer.fit(batches, verbose=0).history["loss"][0])
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert abs(losses[1] - math.log(2)) > 1e-3


def test_weight_averaging_swaps_the_policy_and_never_the_reference(pretrained, pairs, tmp_path):
    # ema_momentum under DPO, through the shared training loop (build_optimizer, fit_phases'
    # SwapEMAWeights): validation scores the averaged policy against the frozen reference.
    train, held_out = pairs
    config = TrainConfig(learning_rate=2e-3, warmup_epochs=0, ema_momentum=0.9)
    trainer = DPOTrainer.from_policy(copy_of(pretrained), beta=0.1)
    run = RunDir(tmp_path / "dpo")
    run.checkpoints.mkdir(parents=True)
    history = fit_phases(
        trainer,
        tf.data.Dataset.from_tensor_slices(train).batch(32),
        tf.data.Dataset.from_tensor_slices(held_out).batch(64),
        phases=[Phase("dpo", 2, lambda: trainer.compile(build_optimizer(config, 16, 2)))],
        run=run,
        config=config,
        steps_per_epoch=16,
        console=None,
        keep_best=False,  # the last epoch's (averaged) policy, as the average stands
        best_by=("preference_accuracy", "max"),
    )
    assert trainer.optimizer.use_ema
    for frozen, original in zip(trainer.reference.weights, pretrained.weights, strict=True):
        np.testing.assert_array_equal(frozen.numpy(), original.numpy())
    averaged = [w.numpy() for w in trainer.policy.trainable_weights]
    for w, ema in zip(averaged, trainer.optimizer._model_variables_moving_average, strict=True):
        np.testing.assert_array_equal(w, ema.numpy())  # after the epoch: the average is in
    rewards = implicit_rewards(trainer.policy, trainer.reference, **held_out, beta=0.1)
    assert history[-1]["val_preference_accuracy"] == pytest.approx(rewards["accuracy"])
    assert rewards["accuracy"] > 0.8


_TWO_REPLICAS = """
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import test_preference as t
from dltoolkit.models.preference import DPOTrainer

base = t.causal_lm()
pairs = t.preference_pairs(32, np.random.default_rng(0))
results = []
for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
    strategy = tf.distribute.MirroredStrategy(devices)
    assert strategy.num_replicas_in_sync == len(devices)
    with strategy.scope():
        trainer = DPOTrainer.from_policy(t.copy_of(base), beta=0.5)
        trainer.compile(keras.optimizers.SGD(0.5))
    batches = tf.data.Dataset.from_tensor_slices(pairs).batch(16)
    loss = trainer.fit(batches, epochs=1, verbose=0, shuffle=False).history["loss"][0]
    results.append((loss, [w.numpy() for w in trainer.policy.weights]))
(one, one_weights), (two, two_weights) = results
moved = max(float(np.abs(a - b).max()) for a, b in zip(one_weights, base.get_weights()))
apart = max(float(np.abs(a - b).max()) for a, b in zip(one_weights, two_weights))
print(one, two, moved, apart)
"""


@pytest.mark.slow
def test_two_replicas_train_as_one_on_the_global_batch():
    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_TWO_REPLICAS)],
        capture_output=True,
        text=True,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    one, two, moved, apart = map(float, done.stdout.split()[-4:])
    assert two == pytest.approx(one, rel=1e-5)
    assert moved > 1e-3 and apart < 1e-5


def test_binomial_interval_known_values():
    assert binomial_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert binomial_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)
    assert binomial_interval(250, 312) == pytest.approx((0.75346, 0.84178), abs=1e-5)
    stats = pytest.importorskip("scipy.stats")
    for k, n, level in ((3, 7, 0.9), (180, 312, 0.95), (312, 312, 0.99)):
        expected = stats.binomtest(k, n).proportion_ci(level, method="wilson")
        assert binomial_interval(k, n, level) == pytest.approx(
            (expected.low, expected.high), abs=1e-9
        )
