"""Multi-worker training on this machine: worker processes on 127.0.0.1 joined by TF_CONFIG.

The recipe is the anomaly detector on the built-in breast-cancer table (small and quick).
Every wait is bounded: a hung worker is killed and the test fails with its output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import dltoolkit_command, run_cli
from multiworker import WAIT, finish, run_job, start_job
from serving import ServingProcess
from test_cli import assert_user_error, cli
from test_image_segmenter import write_square_folder
from test_object_detector import write_yolo_folder
from test_speech_recognizer import TINY as TINY_RECOGNIZER
from test_speech_recognizer import write_tone_folder
from test_summarizer import TINY as TINY_SUMMARIZER
from test_summarizer import make_pairs, write_jsonl
from test_text_classifier import TINY as TINY_TEXT_CLASSIFIER
from test_text_classifier import write_reviews

from dltoolkit import load
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.errors import ConfigError
from dltoolkit.core.localcluster import local_tf_config
from dltoolkit.core.rundir import RunDir, multi_worker_resume
from dltoolkit.core.runtime import (
    check_cluster,
    choose_strategy,
    cluster_size,
    describe_devices,
    distributable,
    is_chief,
    precision_policy,
    task_name,
    with_shard_policy,
    worker_index,
)
from dltoolkit.data.graph_batches import full_batch, replica_share
from dltoolkit.data.graphs import from_networkx, with_split
from dltoolkit.data.images import ImageSet, load_image_source, make_dataset
from dltoolkit.data.samples import load_sample
from dltoolkit.specs.forecast import AUTO_MODELS

# Four global batches of 64 per epoch (237 training rows: 64, 64, 64, 45).
ARGS = ("--epochs", "4", "--batch-size", "64", "--seed", "0", "--set", "early_stopping_patience=0")


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("multiworker") / "job"
    return out, run_job("detect-anomalies", out, *ARGS)


# -- one job, two processes ----------------------------------------------------------------


@pytest.mark.slow  # 25-50 s in the fast suite's CI run (2026-12-06)
def test_two_workers_train_one_run_written_by_the_chief(two_worker_run):
    out, (chief, worker) = two_worker_run
    assert chief["run"] == str(out)
    assert {
        "recipe.toml",
        "model.keras",
        "state.json",
        "history.csv",
        "metrics.json",
        "report.html",
        "export",
    } <= {p.name for p in out.iterdir()}
    assert (out / "export" / out.name / "1" / "saved_model.pb").is_file()
    # The worker wrote the same files into its own scratch directory (gone when it exited)
    # and points its user at the chief's run.
    assert worker["run"] == str(out) and worker["export"] == chief["export"]
    assert worker["metrics"] == chief["metrics"]
    assert not list((out.parent / "tmp").glob("dltoolkit-*"))
    history = read_history(out / "history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    assert not list(out.glob("**/*.bkp")) and not (out / "checkpoints" / "train.backup").exists()


def test_the_chiefs_export_serves_in_a_fresh_tensorflow_only_process(two_worker_run):
    out, _ = two_worker_run
    detector = load(out)
    frame, _ = load_sample("breast-cancer")
    rows = frame.iloc[:12]
    names = detector.signature_inputs()
    feeds = {names[c]: rows[c].astype(np.float32).to_numpy() for c in detector.columns_}
    server = ServingProcess()
    try:
        served = server.call(out / "export" / out.name / "1", feeds)
    finally:
        server.close()
    np.testing.assert_allclose(served["score"], detector.score(rows)["score"], rtol=1e-5)


@pytest.mark.slow  # 25-50 s in the fast suite's CI run (2026-12-06)
def test_two_workers_match_one_process_with_the_same_global_batch(two_worker_run, tmp_path):
    out, (chief, _) = two_worker_run
    single = tmp_path / "single"
    proc = subprocess.run(
        [
            *dltoolkit_command(),
            "detect-anomalies",
            "--strategy",
            "cpu",
            "--out",
            str(single),
            "--json",
            *ARGS,
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "TF_CONFIG": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    alone = json.loads(proc.stdout.strip().splitlines()[-1])
    both, one = read_history(out / "history.csv"), read_history(single / "history.csv")
    # The same optimizer steps per epoch: each step took one global batch, split between workers.
    assert [r["learning_rate"] for r in both] == pytest.approx([r["learning_rate"] for r in one])
    assert both[-1]["val_loss"] == pytest.approx(one[-1]["val_loss"], rel=0.05)
    assert chief["metrics"]["roc_auc"] == pytest.approx(alone["metrics"]["roc_auc"], abs=0.03)


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_job_finishes_without_lost_or_repeated_epochs(
    tmp_path,
):
    out, epochs = tmp_path / "job", 12
    args = (
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--seed",
        "0",
        "--set",
        "early_stopping_patience=0",
    )
    procs = start_job("detect-anomalies", out, *args)
    deadline = time.monotonic() + WAIT
    while len(read_history(out / "history.csv")) < 3:
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()[1][
            -3000:
        ]
        time.sleep(0.2)
    os.killpg(procs[1].pid, signal.SIGKILL)
    killed_after = len(read_history(out / "history.csv"))
    code, _, err = finish(procs[:1], time.monotonic() + 120)[0]
    procs[1].communicate()
    assert code == 2 and "restart every worker with the same command" in err, err[-3000:]
    assert killed_after < epochs
    # Restart both with the very same command: the job resumes from the shared checkpoints.
    results = finish(start_job("detect-anomalies", out, *args), time.monotonic() + WAIT)
    for rc, _, stderr in results:
        assert rc == 0, stderr[-3000:]
    history = read_history(out / "history.csv")
    assert [int(r["epoch"]) for r in history] == list(range(1, epochs + 1))
    assert history[-1]["loss"] < history[0]["loss"]
    served = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tensorflow as tf; "
            "print(list(tf.saved_model.load(sys.argv[1]).signatures))",
            str(out / "export" / out.name / "1"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "serving_default" in served.stdout, served.stderr[-2000:]


# -- strategy choice, TF_CONFIG and batches, in this process --------------------------------


def test_auto_on_this_machine_and_precision_policies(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert choose_strategy("auto") == ("cpu", "no GPU or TPU found")
    info = describe_devices()
    assert info["strategy"] == "cpu" and "cluster" not in info
    assert any(d["type"] == "CPU" for d in info["devices"])
    assert precision_policy(True, "tpu") == "mixed_bfloat16"
    assert precision_policy(True, "mirrored") == "mixed_float16"
    assert precision_policy(False, "tpu") == "float32"
    monkeypatch.setenv("TPU_NAME", "my-tpu")
    assert choose_strategy("auto") == ("tpu", "a TPU is configured")


def test_tf_config_roles(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief() and cluster_size() == 1 and worker_index() == 0 and task_name() == ""
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({**with_chief, "task": {"type": "worker", "index": 0}})
    )
    assert (
        not is_chief() and cluster_size() == 3 and worker_index() == 1 and task_name() == "worker 0"
    )
    assert choose_strategy("auto") == (
        "multi-worker",
        "TF_CONFIG describes a cluster of 3 processes",
    )
    info = describe_devices()
    assert info["cluster"] == {
        "processes": 3,
        "this process": "worker 0",
        "writes the run directory": False,
    }
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({**with_chief, "task": {"type": "chief", "index": 0}})
    )
    assert is_chief() and worker_index() == 0
    monkeypatch.setenv("TF_CONFIG", local_tf_config([1, 2], 1))
    assert not is_chief() and worker_index() == 1


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"cluster": {"worker": ["a:1"]}}, 'needs "cluster" and "task"'),
        (
            {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}},
            "use 0..1",
        ),
        ({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}, "chief or worker"),
    ],
)
def test_unusable_tf_config_is_a_config_error(monkeypatch, config, fragment):
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    with pytest.raises(ConfigError, match=fragment):
        check_cluster()


def test_multi_worker_cli_mistakes_are_one_line_errors(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert_user_error(
        *cli(
            capsys,
            "detect-anomalies",
            "--strategy",
            "multi-worker",
            "--out",
            tmp_path / "a",
            "--epochs",
            "1",
        ),
        "needs TF_CONFIG",
    )
    monkeypatch.setenv("TF_CONFIG", local_tf_config([1, 2], 0))
    assert_user_error(
        *cli(capsys, "detect-anomalies", "--strategy", "multi-worker", "--epochs", "1"),
        "needs --out",
    )
    assert_user_error(
        *cli(
            capsys,
            "detect-anomalies",
            "--strategy",
            "multi-worker",
            "--out",
            tmp_path / "a",
            "--overwrite",
        ),
        "--overwrite cannot be used",
    )
    monkeypatch.setenv("TF_CONFIG", "{not json")
    assert_user_error(*cli(capsys, "devices", "--strategy", "auto"), "TF_CONFIG is not valid JSON")
    assert not (tmp_path / "a").exists()


def test_a_restarted_job_resumes_an_existing_run(tmp_path):
    assert multi_worker_resume(tmp_path / "new", False, False) is False
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "recipe.toml").write_text('task = "detect-anomalies"\n')
    assert multi_worker_resume(tmp_path / "old", False, False) is True


def test_a_worker_scratch_run_starts_from_the_shared_checkpoints(tmp_path):
    shared = RunDir(tmp_path / "shared")
    (shared.checkpoints / "train.backup").mkdir(parents=True)
    (shared.checkpoints / "train.backup" / "training_metadata.json").write_text('{"epoch": 3}')
    shared.history_file.write_text("epoch,phase,loss\n1,train,0.5\n")
    scratch = RunDir.scratch(shared.path, "worker 1")
    assert scratch.path != shared.path and scratch.resume_from == shared.path
    scratch.pull_resume_state()
    assert (
        scratch.checkpoints / "train.backup" / "training_metadata.json"
    ).read_text() == '{"epoch": 3}'
    assert read_history(scratch.history_file) == read_history(shared.history_file)


def test_distributable_shards_by_data_and_drops_batches_smaller_than_the_replicas():
    # 9 examples in global batches of 4: 4, 4, 1; the last cannot feed 2 replicas.
    ds = tf.data.Dataset.range(9).batch(4)
    ready = distributable(ds, replicas=2)
    assert (
        ready.options().experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.DATA
    )
    assert int(ready.cardinality()) == 2  # a known length: Keras runs no extra empty step
    assert [len(b) for b in ready] == [4, 4]
    assert [len(b) for b in distributable(ds, replicas=1)] == [4, 4, 1]
    off = tf.data.experimental.AutoShardPolicy.OFF  # a pipeline that split its files itself
    already = distributable(with_shard_policy(ds, off), replicas=2)
    assert already.options().experimental_distribute.auto_shard_policy == off
    with pytest.raises(ConfigError, match="larger --batch-size"):
        distributable(tf.data.Dataset.range(3).batch(1), replicas=2)


def test_image_files_are_split_between_workers_and_arrays_are_not(digit_folder):
    source = load_image_source(str(digit_folder))
    images = source.splits["train"]  # 120 files
    common = {"image_shape": (16, 16, 1), "batch_size": 32, "training": True, "num_classes": 3}
    seen = []
    for index in range(2):
        ds = make_dataset(images, **common, shard=(2, index))
        assert (
            ds.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.OFF
        )
        seen.append(sum(len(y) for _, y in ds))
    assert seen == [60, 60]  # each worker decodes only its half
    arrays = ImageSet(images=np.zeros((10, 16, 16, 1), np.uint8), labels=np.arange(10) % 3)
    ds = make_dataset(arrays, **common, shard=(2, 0))  # in memory: left to DATA sharding
    assert sum(len(y) for _, y in ds) == 10
    assert (
        ds.options().experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.AUTO
    )


@pytest.mark.slow
def test_two_workers_classify_an_image_folder_sharded_by_file(digit_folder, tmp_path):
    out = tmp_path / "job"
    run_job("classify", out, "--data", digit_folder, "--epochs", 4, "--batch-size", 16)
    history = read_history(out / "history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    assert load(out).metrics_["accuracy"] > 0.5


def test_a_recipe_that_cannot_be_replicated_says_so_in_help_and_refuses(
    monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("TF_CONFIG", local_tf_config([1, 2], 0))
    for strategy in ("multi-worker", "mirrored"):
        assert_user_error(
            *cli(capsys, "train-agent", "--strategy", strategy, "--out", tmp_path / "n"),
            f"train-agent cannot train with --strategy {strategy}",
            "--strategy cpu or gpu",
        )
    assert not (tmp_path / "n").exists()
    code, out, _ = cli(capsys, "train-agent", "--help")
    assert code == 0 and "refused" in out and "multi-worker" in out


def test_replicas_split_the_labelled_nodes_and_their_losses_add_up_to_the_global_mean():
    graph = with_split(from_networkx(load_sample("karate"), "label"), 0.2, 0.2, 0)
    train = graph.masks["train"]
    shares = [replica_share(train, r, 3) for r in range(3)]
    assert (sum(s.astype(int) for s in shares) == train).all()  # each node in exactly one share
    assert max(s.sum() for s in shares) - min(s.sum() for s in shares) <= 1
    losses = np.random.default_rng(0).random(graph.num_nodes)
    weights = [next(iter(full_batch(graph, s, train.sum() / 3)))[2].numpy() for s in shares]
    # Keras: each replica's loss is the weighted mean over all N nodes, divided by 3 replicas
    summed = sum(np.mean(losses * w) / 3 for w in weights)
    assert summed == pytest.approx(losses[train].mean())


# -- every model.fit recipe under two workers (each a minute or more: slow) ----------------

RECIPE_WAIT = 1200  # seconds: at load 12-15 on 2 shared cores a 2-minute job took 14 minutes


def chief_run(out, results, epochs: int) -> list[dict]:
    """Check the job's chief wrote the run (model, export, report) and return its history."""
    chief, worker = results
    assert chief["run"] == worker["run"] == str(out)
    assert {"model.keras", "metrics.json", "report.html", "export"} <= {
        p.name for p in out.iterdir()
    }
    assert (out / "export" / out.name / "1" / "saved_model.pb").is_file()
    assert not list((out.parent / "tmp").glob("dltoolkit-*"))  # workers' scratch runs removed
    history = read_history(out / "history.csv")
    assert [int(r["epoch"]) for r in history] == list(range(1, epochs + 1))
    return history


@pytest.mark.slow
@pytest.mark.parametrize(
    "model", [("gcn",), ("gcnii", "--set", "layers=4"), ("appnp",)], ids=lambda m: m[0]
)
def test_two_workers_classify_nodes_exactly_as_one_process(model, tmp_path):
    """Full batch: each replica runs the whole graph with the loss over its share of the
    training nodes; the summed gradients are one process's (dropout, edge dropout too)."""
    args = ("--model", *model, "--epochs", 20, "--seed", 0, "--set", "early_stopping_patience=0")
    out = tmp_path / "job"
    history = chief_run(out, run_job("classify-nodes", out, *args, wait=RECIPE_WAIT), 20)
    single = run_cli(
        "classify-nodes",
        "--strategy",
        "cpu",
        "--out",
        tmp_path / "one",
        "--json",
        *args,
        timeout=RECIPE_WAIT,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    alone = read_history(tmp_path / "one" / "history.csv")
    for key in ("loss", "val_loss", "accuracy"):
        assert [r[key] for r in history] == pytest.approx([r[key] for r in alone], rel=1e-3), key


@pytest.mark.slow
def test_two_workers_classify_nodes_with_sampled_subgraphs(tmp_path):
    out = tmp_path / "job"
    args = (
        "--model",
        "sage",
        "--batching",
        "sampled",
        "--batch-size",
        8,
        "--epochs",
        10,
        "--seed",
        0,
        "--set",
        "early_stopping_patience=0",
    )
    history = chief_run(out, run_job("classify-nodes", out, *args, wait=RECIPE_WAIT), 10)
    assert history[-1]["loss"] < history[0]["loss"]
    assert load(out).metrics_["accuracy"] >= 0.7


@pytest.mark.slow
def test_two_workers_generate_and_the_export_samples_in_a_fresh_tensorflow_process(tmp_path):
    out = tmp_path / "job"
    args = (
        "--model",
        "ddpm",
        "--conditional",
        "--width",
        8,
        "--epochs",
        2,
        "--batch-size",
        32,
        "--seed",
        1,
        "--sample-steps",
        6,
        "--learning-rate",
        2e-3,
    )
    sets = (
        "steps_per_epoch=10",
        "grid_size=10",
        "eval_samples=60",
        "eval_classifier_epochs=1",
        "blocks=1",
        "timesteps=200",
    )
    results = run_job(
        "generate", out, *args, *(x for s in sets for x in ("--set", s)), wait=RECIPE_WAIT
    )
    history = chief_run(out, results, 2)
    assert all(np.isfinite(r["loss"]) for r in history)
    assert results[0]["metrics"]["classifier_fd"] > 0
    server = ServingProcess()
    try:
        served = server.call(
            out / "export" / out.name / "1",
            {"batch_size": np.int32(6), "seed": np.int64(5), "labels": np.array([3], np.int32)},
        )
    finally:
        server.close()
    images = served["images"]
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(tf.io.decode_png(served["png"][0]).numpy(), images[0])
    np.testing.assert_array_equal(images, load(out).sample(6, seed=5, label="3"))


def setting(key, value) -> str:
    """A `--set key=value` argument; booleans as the CLI spells them (true/false)."""
    return f"{key}={str(value).lower() if isinstance(value, bool) else value}"


@pytest.mark.slow
def test_two_workers_summarize(tmp_path):
    out, data = tmp_path / "job", write_jsonl(tmp_path / "pairs.jsonl", make_pairs(200))
    sets = [setting(k, v) for k, v in TINY_SUMMARIZER.items() if k not in ("batch_size", "seed")]
    results = run_job(
        "summarize",
        out,
        "--data",
        data,
        "--text-field",
        "article",
        "--summary-field",
        "highlights",
        "--epochs",
        3,
        "--batch-size",
        32,
        "--seed",
        0,
        *(x for s in sets for x in ("--set", s)),
        wait=RECIPE_WAIT,
    )
    history = chief_run(out, results, 3)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"] and np.isfinite(history[-1]["val_loss"])
    assert results[0]["metrics"]["documents"] == 20


@pytest.mark.slow
def test_two_workers_forecast(tmp_path):
    out = tmp_path / "job"
    results = run_job(
        "forecast",
        out,
        "--lookback",
        52,
        "--horizon",
        13,
        "--epochs",
        3,
        "--seed",
        1,
        "--set",
        "layers=1",
        "--set",
        "early_stopping_patience=0",
        wait=RECIPE_WAIT,
    )
    history = chief_run(out, results, 9)  # model auto: 3 epochs for each of 3 candidates
    for phase in AUTO_MODELS:
        losses = [row["loss"] for row in history if row["phase"] == phase]
        assert len(losses) == 3 and losses[-1] < losses[0], phase
    metrics = results[0]["metrics"]
    assert metrics["mse"] < metrics["naive_mse"] and "model_choice" in metrics


@pytest.mark.slow
def test_two_workers_segment_an_image_folder_sharded_by_file(tmp_path):
    folder = write_square_folder(tmp_path / "squares", count=40)
    out = tmp_path / "job"
    settings = ("filters=8", "depth=2", "learning_rate=0.01", "early_stopping_patience=0")
    args = [a for s in settings for a in ("--set", s)]
    results = run_job(
        "segment",
        out,
        "--data",
        folder,
        "--epochs",
        4,
        "--batch-size",
        8,
        *args,
        wait=RECIPE_WAIT,
    )
    history = chief_run(out, results, 4)
    assert history[-1]["loss"] < history[0]["loss"]
    assert results[0]["metrics"]["mean_iou"] > 0.5


@pytest.mark.slow
def test_two_workers_detect_objects_in_a_yolo_folder_sharded_by_file(tmp_path):
    """Each worker reads its share of the image files; the detection loss is normalised over
    the global batch (see models/detection.py)."""
    folder = write_yolo_folder(tmp_path / "shapes", count=60)
    out = tmp_path / "job"
    settings = ("width=8", "image_size=64", "learning_rate=0.005")
    args = [a for s in settings for a in ("--set", s)]
    results = run_job(
        "detect-objects",
        out,
        "--data",
        folder,
        "--epochs",
        4,
        "--batch-size",
        8,
        *args,
        wait=RECIPE_WAIT,
    )
    history = chief_run(out, results, 4)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert results[0]["metrics"]["map50"] > results[0]["metrics"]["baseline_map50"]


@pytest.mark.slow
def test_two_workers_transcribe(tmp_path):
    folder = write_tone_folder(tmp_path / "tones", count=60)
    out = tmp_path / "job"
    skipped = ("epochs", "batch_size", "seed")
    sets = [setting(k, v) for k, v in TINY_RECOGNIZER.items() if k not in skipped]
    results = run_job(
        "transcribe",
        out,
        "--data",
        folder,
        "--epochs",
        8,
        "--batch-size",
        8,
        *(x for s in sets for x in ("--set", s)),
        wait=RECIPE_WAIT,
    )
    history = chief_run(out, results, 8)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    metrics = results[0]["metrics"]
    assert metrics["wer"] < metrics["baseline_wer"]


@pytest.mark.slow
def test_two_workers_classify_text(tmp_path):
    data = write_reviews(tmp_path / "reviews.csv", count=400)
    out = tmp_path / "job"
    skipped = ("epochs", "batch_size")
    sets = [setting(k, v) for k, v in TINY_TEXT_CLASSIFIER.items() if k not in skipped]
    results = run_job(
        "classify-text",
        out,
        "--data",
        data,
        "--epochs",
        8,
        "--batch-size",
        16,
        *(x for s in sets for x in ("--set", s)),
        wait=RECIPE_WAIT,
    )
    history = chief_run(out, results, 8)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    metrics = results[0]["metrics"]
    assert metrics["accuracy"] > metrics["baseline_accuracy"] + 0.2
