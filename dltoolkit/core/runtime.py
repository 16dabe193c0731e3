"""Where and how a run executes: tf.distribute strategy, precision policy and seeds."""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import tensorflow as tf

from dltoolkit.core.config import STRATEGIES
from dltoolkit.core.errors import ConfigError

REPLICATED = (
    "mirrored",
    "multi-worker",
    "tpu",
)  # strategies that split each batch between replicas


@dataclass
class Runtime:
    """A resolved strategy plus the precision policy in force."""

    strategy: tf.distribute.Strategy
    kind: str  # one of STRATEGIES except "auto"
    reason: str
    policy: str

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def cluster_spec() -> dict:
    """The TF_CONFIG environment variable as a dict ({} when unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError("TF_CONFIG is not valid JSON; fix or unset it") from None


def is_chief() -> bool:
    """True unless TF_CONFIG makes this process a non-chief worker."""
    spec = cluster_spec()
    task = spec.get("task", {})
    if not task:
        return True
    if "chief" in spec.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def task_name() -> str:
    """This process's place in the TF_CONFIG cluster, e.g. 'worker 1' ('' without TF_CONFIG)."""
    task = cluster_spec().get("task", {})
    return f"{task.get('type', 'worker')} {int(task.get('index', 0))}" if task else ""


def worker_index() -> int:
    """This process's input-pipeline index in the cluster: the chief is 0, workers follow."""
    spec = cluster_spec()
    task = spec.get("task", {})
    if not task or task.get("type") == "chief":
        return 0
    return int(task.get("index", 0)) + (1 if "chief" in spec.get("cluster", {}) else 0)


def cluster_size() -> int:
    """How many training processes (chief plus workers) TF_CONFIG describes (1 without it)."""
    cluster = cluster_spec().get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def check_cluster() -> None:
    """Refuse a TF_CONFIG that MultiWorkerMirroredStrategy cannot use, with the fix."""
    spec = cluster_spec()
    cluster, task = spec.get("cluster"), spec.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(
            'TF_CONFIG needs "cluster" and "task", e.g. {"cluster": {"worker": ["host1:12345", '
            '"host2:12345"]}, "task": {"type": "worker", "index": 0}}'
        )
    kind, index = task.get("type"), task.get("index", 0)
    members = cluster.get(kind)
    if kind not in ("chief", "worker") or not isinstance(members, list):
        raise ConfigError(
            f"TF_CONFIG task type '{kind}' is not a chief or worker listed in its cluster; "
            "multi-worker training has only chief and worker tasks"
        )
    if not isinstance(index, int) or not 0 <= index < len(members):
        raise ConfigError(
            f"TF_CONFIG task index {index} is outside the {len(members)} '{kind}' "
            f"address(es) listed; use 0..{len(members) - 1}"
        )


def choose_strategy(name: str, tpu: str | None = None) -> tuple[str, str]:
    """Which strategy kind `name` means on this machine, and why (no device is initialised)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}")
    if name != "auto":
        return name, "asked for explicitly"
    # Physical device lists only: they do not start TensorFlow's runtime, which a
    # multi-worker run must configure first (see `connect_cluster`).
    if tpu or os.environ.get("TPU_NAME") or tf.config.list_physical_devices("TPU"):
        return "tpu", "a TPU is configured"
    if cluster_size() > 1:
        return "multi-worker", f"TF_CONFIG describes a cluster of {cluster_size()} processes"
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return "mirrored", f"{len(gpus)} GPUs on this host"
    if gpus:
        return "gpu", "one GPU on this host"
    return "cpu", "no GPU or TPU found"


def one_process_strategy(name: str, tpu: str | None = None) -> str:
    """The strategy for training a process does on its own inside a multi-worker job (e.g.
    an evaluation model): `name`, or this host's devices instead of the cluster."""
    if choose_strategy(name, tpu)[0] != "multi-worker":
        return name
    gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if gpus > 1 else "gpu" if gpus else "cpu"


def make_strategy(kind: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """Build the tf.distribute strategy of `kind`."""
    if kind == "cpu":
        if not tf.distribute.has_strategy() and not tf.config.list_physical_devices("GPU"):
            # The CPU is the only device, where TensorFlow places everything anyway: Keras
            # then runs the loop of a plain script, without OneDeviceStrategy's
            # multi-device iterator (made for every epoch, and a hop for every batch).
            return tf.distribute.get_strategy()
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if kind == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise ConfigError(
                "--strategy gpu but TensorFlow sees no GPU; use --strategy auto or cpu"
            )
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi-worker":
        return connect_cluster()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


@functools.cache
def connect_cluster() -> tf.distribute.Strategy:
    """This process's MultiWorkerMirroredStrategy: made once, and before TensorFlow runs anything.

    It joins the TF_CONFIG cluster (waiting for every worker) and must come before the first
    TensorFlow op of the process, so `Recipe.fit` calls it before reading any data.
    """
    if not cluster_spec():
        raise ConfigError(
            "--strategy multi-worker needs TF_CONFIG describing the cluster "
            "(see README, 'Scaling out'); set it on every worker"
        )
    check_cluster()
    try:
        return KerasMultiWorkerStrategy()
    except RuntimeError as err:
        if "program startup" not in str(err):
            raise
        raise ConfigError(
            "multi-worker training must join the cluster before TensorFlow runs anything in "
            "this process; start a fresh process and call fit first"
        ) from None


class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` accepts what Keras 3's `fit` hands it.

    Keras 3 (through at least 3.15) reduces a nested data batch when it builds the model
    and reduces scalar logs with `axis=0`; the plain strategy rejects both in multi-worker
    mode (keras-team/keras#20585). This reduces each value of a nest on its own, and a
    scalar across replicas only. A non-scalar with `axis=None` is that data batch, whose
    shape may differ between replicas (e.g. sampled subgraphs, where an all-reduce fails):
    Keras only reads its shapes, so this replica's part is returned, with no all-reduce.
    """

    def reduce(self, reduce_op, value, axis):
        def one(v):
            local = self.experimental_local_results(v)[0]
            rank = local.shape.rank
            if axis is None and rank:
                return local
            return super(KerasMultiWorkerStrategy, self).reduce(
                reduce_op, v, axis if rank else None
            )

        return tf.nest.map_structure(one, value)


def distributable(dataset, replicas: int):
    """`dataset` ready for tf.distribute: a deliberate auto-shard policy and no tiny batches.

    In-memory pipelines (tensor slices, generators) are sharded by DATA: every worker walks
    the same seeded order and keeps its part of each global batch, so a step consumes the
    global batch exactly as one process would. A pipeline that already split its files
    between workers (see `file_shard`) says so with policy OFF and is left as it is.
    A batch with fewer examples than replicas would leave a replica an empty batch (and the
    loss NaN), so such a (last) batch is dropped; the batches are counted once to keep the
    epoch's length known, since with an unknown length Keras runs one extra, empty step.
    """
    if not isinstance(dataset, tf.data.Dataset) or replicas <= 1:
        return dataset
    if (
        dataset.options().experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.AUTO
    ):
        dataset = with_shard_policy(dataset, tf.data.experimental.AutoShardPolicy.DATA)
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:  # epochs are counted in steps
        return dataset
    sizes = [int(n) for n in dataset.map(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0])]
    kept = sum(n >= replicas for n in sizes)
    if kept == len(sizes) and dataset.cardinality() >= 0:
        return dataset
    if not kept:
        raise ConfigError(
            f"every batch holds fewer examples than the {replicas} replicas; "
            "use a larger --batch-size or fewer workers"
        )
    kept_only = dataset.filter(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0] >= replicas)
    return kept_only.apply(tf.data.experimental.assert_cardinality(kept))


def with_shard_policy(dataset: tf.data.Dataset, policy) -> tf.data.Dataset:
    """`dataset` with its tf.distribute auto-shard policy set to `policy`."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)


def file_shard(rt: Runtime | None, files: int) -> tuple[int, int] | None:
    """(workers, this worker's index) when a pipeline of `files` files should split them.

    In a multi-worker run with at least as many files as workers, each worker reads only
    its own files (the FILE policy's effect, applied to the file list because images are
    read with tf.io.read_file, which tf.data's FILE policy cannot see); otherwise None.
    """
    workers = cluster_size()
    if rt is None or rt.kind != "multi-worker" or workers <= 1 or files < workers:
        return None
    return workers, worker_index()


def precision_policy(mixed: bool, kind: str) -> str:
    """mixed_float16 on GPUs, mixed_bfloat16 on TPU and CPU, float32 when not mixed."""
    if not mixed:
        return "float32"
    return "mixed_float16" if kind in ("gpu", "mirrored") else "mixed_bfloat16"


@contextlib.contextmanager
def runtime(
    strategy: str = "auto", *, tpu=None, mixed_precision=False, seed=0
) -> Iterator[Runtime]:
    """Seed everything, set the precision policy and yield the resolved strategy.

    The global precision policy is restored afterwards, so one run never leaks into the next.
    """
    kind, reason = choose_strategy(strategy, tpu)
    policy = precision_policy(mixed_precision, kind)
    keras.utils.set_random_seed(seed)
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield Runtime(make_strategy(kind, tpu), kind, reason, policy)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def describe_devices(strategy: str = "auto", tpu: str | None = None) -> dict:
    """What hardware TensorFlow sees and what `strategy` would use, for `dltoolkit devices`."""
    kind, reason = choose_strategy(strategy, tpu)
    info = {
        "devices": [
            {"type": d.device_type, "name": d.name} for d in tf.config.list_physical_devices()
        ],
        "tf_config": bool(cluster_spec()),
        "strategy": kind,
        "reason": reason,
        "mixed_precision_policy": precision_policy(True, kind),
    }
    if kind == "multi-worker" and cluster_spec():
        check_cluster()
        info["cluster"] = {
            "processes": cluster_size(),
            "this process": task_name(),
            "writes the run directory": is_chief(),
        }
    return info
