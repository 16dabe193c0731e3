"""Code that runs on every replica of a tf.distribute strategy: losses, noise and inputs.

Keras' built-in `train_step` divides each replica's loss by the number of replicas and its
optimizer sums the gradients over replicas, which gives the gradient of the global-batch
mean. A custom `train_step` must do the same (`gradient_loss`). Every worker of a job seeds
alike (their input pipelines must shuffle alike), so a stateful random op draws the same
numbers on every replica; `replica_draw` gives each replica its own.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def _replicas() -> tuple[int, int | tf.Tensor]:
    """(replicas in sync, this replica's id) -- (1, 0) outside a replica context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return 1, 0
    return ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group


def gradient_loss(loss, optimizer):
    """What a custom `train_step` differentiates for the per-replica mean `loss`: its share
    of the global-batch mean, times the optimizer's mixed-precision loss scale (if any)."""
    replicas, _ = _replicas()
    if replicas > 1:
        loss = loss / tf.cast(replicas, loss.dtype)
    return optimizer.scale_loss(loss)


def replica_draw(draw: Callable, shape, **kwargs):
    """`draw(shape, **kwargs)` (a stateful tf.random op) with different numbers on every
    replica: each draws for all replicas and keeps its own part; one replica draws `shape`."""
    replicas, replica = _replicas()
    if replicas == 1:
        return draw(shape, **kwargs)
    full = draw(tf.concat([[replicas], tf.cast(shape, tf.int32)], 0), **kwargs)
    return full[replica]


def per_replica_dataset(
    strategy: tf.distribute.Strategy, make: Callable[[int, int], tf.data.Dataset]
):
    """A dataset in which replica r of R reads its own elements `make(r, R)`, rather than a
    slice of a global batch: for inputs with no batch dimension to split (a whole graph).

    Each worker builds only its own replicas' pipelines; with one replica this is `make(0, 1)`.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return make(0, 1)

    def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local
        datasets = [make(first + j, replicas) for j in range(local)]
        if local == 1:
            return datasets[0]
        # successive elements of a worker's pipeline go to its successive replicas
        return tf.data.Dataset.choose_from_datasets(datasets, tf.data.Dataset.range(local).repeat())

    return strategy.distribute_datasets_from_function(pipeline)
