"""NodeClassifier end to end on small real graphs: layer math, training, save/load, export, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from test_cli import assert_user_error, cli

from dltoolkit import NodeClassifier, load
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.recipe import Recipe
from dltoolkit.data.graphs import canonical_edges, load_planetoid, with_split
from dltoolkit.models.graph import (
    APPNPPropagation,
    GATConv,
    GCNConv,
    GCNIIConv,
    SAGEConv,
    gcn_norm,
    propagate,
    segment_softmax,
)

PLANETOID = Path("/work/shared/data/planetoid")


def write_block_graph(folder: Path, seed=0, blocks=3, size=30) -> tuple[Path, Path]:
    """A stochastic block model with noisy class-mean features: 3 classes of 30 nodes, a
    sixth of them unlabelled, plus a self loop, a duplicate edge and an isolated node."""
    rng = np.random.default_rng(seed)
    graph = nx.stochastic_block_model(
        [size] * blocks, np.where(np.eye(blocks), 0.15, 0.01), seed=seed
    )
    labels = np.repeat([f"c{i}" for i in range(blocks)], size)
    features = (
        rng.normal(size=(blocks, 6))[np.repeat(np.arange(blocks), size)]
        + rng.normal(size=(len(labels), 6)) * 1.5
    )
    nodes = pd.DataFrame(features, columns=[f"f{i}" for i in range(6)]).round(4)
    nodes.insert(0, "id", [f"n{i}" for i in range(len(labels))])
    nodes["label"] = np.where(np.arange(len(labels)) % 6 == 5, "", labels)
    edges = pd.DataFrame([(f"n{u}", f"n{v}") for u, v in graph.edges], columns=["source", "target"])
    edges = pd.concat([edges, edges.iloc[:1], pd.DataFrame({"source": ["n0"], "target": ["n0"]})])
    edges = edges[(edges.source != "n89") & (edges.target != "n89")]  # n89 stays isolated
    folder.mkdir(parents=True, exist_ok=True)
    nodes.to_csv(folder / "nodes.csv", index=False)
    edges.to_csv(folder / "edges.csv", index=False)
    return folder / "nodes.csv", folder / "edges.csv"


@pytest.fixture(scope="module")
def block_graph(tmp_path_factory):
    return write_block_graph(tmp_path_factory.mktemp("blocks"))


@pytest.fixture(scope="module")
def trained(fits):
    """60 epochs of GCN on a write_block_graph() folder (contract_cases.CLASSIFY_NODES)."""
    clf, folder = fits.get("classify-nodes")
    return clf, folder / "run"


def _path_graph():
    edges, weights = canonical_edges(np.array([[0, 1], [1, 2]]), np.ones(2), 3, directed=False)
    return np.eye(3, dtype=np.float32), edges, weights


def test_gcn_layer_is_the_symmetric_normalised_adjacency_with_self_loops():
    x, edges, weights = _path_graph()
    layer = GCNConv(3, use_bias=False)
    layer.build((3, 3))
    layer.kernel.assign(np.eye(3))
    a_hat = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], np.float32)
    d = 1 / np.sqrt(a_hat.sum(1))
    np.testing.assert_allclose(layer(x, edges, weights), d[:, None] * a_hat * d[None, :], atol=1e-6)


def test_sage_mean_and_gat_attention_by_hand():
    x, edges, weights = _path_graph()
    sage = SAGEConv(3, use_bias=False)
    sage.build((3, 3))
    sage.kernel_self.assign(np.zeros((3, 3)))
    sage.kernel_neighbours.assign(np.eye(3))
    np.testing.assert_allclose(
        sage(x, edges, weights), [[0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]], atol=1e-6
    )
    alpha = segment_softmax(np.array([0.0, 1.0, 5.0]), np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(alpha, [1 / (1 + np.e), np.e / (1 + np.e), 1.0], atol=1e-6)
    gat = GATConv(2, heads=3, attention_dropout=0.5)
    gat.build((3, 3))
    gat.attention_source.assign(np.zeros((3, 2)))
    gat.attention_target.assign(np.zeros((3, 2)))  # uniform attention: the mean over N(i) + i
    h = (x @ gat.kernel.numpy()).reshape(3, 3, 2)
    mean = np.stack([h[[0, 1]].mean(0), h[[0, 1, 2]].mean(0), h[[1, 2]].mean(0)]).reshape(3, 6)
    np.testing.assert_allclose(gat(x, edges, weights), mean, atol=1e-5)


def _normalised_adjacency(edges, weights, n) -> np.ndarray:
    """D^-1/2 (A + I) D^-1/2 with A[target, source] = weight, in float64."""
    a_hat = np.eye(n)
    for (source, target), weight in zip(edges, weights, strict=True):
        a_hat[target, source] += weight
    d = 1 / np.sqrt(a_hat.sum(1))
    return d[:, None] * a_hat * d[None, :]


def test_propagation_and_its_gradient_are_the_normalised_adjacency_and_its_transpose():
    rng = np.random.default_rng(0)
    n = 7
    edges = np.array([[0, 1], [2, 1], [1, 3], [4, 3], [3, 4], [6, 5], [0, 6], [5, 0]], np.int32)
    weights = rng.uniform(0.5, 2.0, len(edges)).astype(np.float32)
    x = tf.constant(rng.normal(size=(n, 4)).astype(np.float32))
    upstream = rng.normal(size=(n, 4))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = propagate(x, gcn_norm(edges, weights, n), n)
        score = tf.reduce_sum(y * upstream)
    a_hat = _normalised_adjacency(edges, weights, n)  # directed: not symmetric
    np.testing.assert_allclose(y, a_hat @ x.numpy(), atol=1e-5)
    np.testing.assert_allclose(tape.gradient(score, x), a_hat.T @ upstream, atol=1e-5)


def test_gcnii_layer_and_appnp_propagation_by_hand():
    x, edges, weights = _path_graph()
    a_hat = _normalised_adjacency(edges.numpy(), weights.numpy(), 3)
    adjacency = gcn_norm(edges, weights, 3)
    x0 = np.arange(9, dtype=np.float32).reshape(3, 3) / 10
    layer = GCNIIConv(3, alpha=0.2, beta=0.3, activation=None)
    layer.build((3, 3))
    kernel = np.random.default_rng(1).normal(size=(3, 3))
    layer.kernel.assign(kernel)
    mixed = 0.8 * a_hat @ x + 0.2 * x0  # initial residual
    expected = 0.7 * mixed + 0.3 * mixed @ kernel  # identity mapping
    np.testing.assert_allclose(layer(x, x0, adjacency), expected, atol=1e-5)
    # 100 power-iteration steps reach the personalised PageRank alpha (I - (1 - alpha) A)^-1 h
    ppr = 0.1 * np.linalg.inv(np.eye(3) - 0.9 * a_hat) @ x0
    propagation = APPNPPropagation(steps=100, alpha=0.1, dropout=0.5)
    np.testing.assert_allclose(propagation(x0, adjacency), ppr, atol=1e-4)
    assert not np.allclose(propagation(x0, adjacency, training=True), ppr, atol=1e-2)


def test_canonical_edges_symmetrise_merge_duplicates_and_drop_self_loops():
    edges, weights = canonical_edges(
        np.array([[0, 1], [0, 1], [1, 1], [2, 1]]),
        np.array([1.0, 3.0, 1.0, 2.0]),
        3,
        directed=False,
    )
    got = {tuple(e): w for e, w in zip(edges.numpy().tolist(), weights.numpy(), strict=True)}
    assert got == {(0, 1): 3.0, (1, 0): 3.0, (2, 1): 2.0, (1, 2): 2.0}
    directed, _ = canonical_edges(np.array([[0, 1]]), np.ones(1), 2, directed=True)
    assert directed.numpy().tolist() == [[0, 1]]


def test_fit_writes_a_run_learns_and_reports_embeddings(trained):
    clf, out = trained
    for name in (
        "recipe.toml",
        "model.keras",
        "state.json",
        "history.csv",
        "metrics.json",
        "report.html",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["accuracy"] > 0.75 and metrics["macro_f1"] > 0.7
    assert set(metrics["per_class"]) == {"c0", "c1", "c2"}
    rows = read_history(out / "history.csv")
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.7 and "val_accuracy" in rows[0]
    assert (out / "plots" / "embeddings.png").stat().st_size > 5000
    assert "Learned node embeddings" in (out / "report.html").read_text()


def test_predict_labels_the_unlabelled_nodes(trained):
    clf, out = trained
    rows = load(out).predict()  # re-reads the graph named in recipe.toml
    assert [r["node"] for r in rows] == [f"n{i}" for i in range(90) if i % 6 == 5]
    truth = [f"c{i // 30}" for i in range(90) if i % 6 == 5]
    assert np.mean([r["label"] == t for r, t in zip(rows, truth, strict=True)]) > 0.7


def _gcn_by_hand(clf, features, edges, weights) -> np.ndarray:
    """The pre-issue-20 export's math in float64: edges made canonical outside the model
    (both directions, no self loops, duplicates at their largest weight), then
    standardised features through D^-1/2 (A + I) D^-1/2 X W + b, relu, again, softmax."""
    n = len(features)
    adjacency = np.zeros((n, n))  # adjacency[target, source]
    for (source, target), weight in zip(edges, weights, strict=True):
        if source != target:
            for s, t in ((source, target), (target, source)):
                adjacency[t, s] = max(adjacency[t, s], weight)
    adjacency += np.eye(n)
    inv_sqrt = 1 / np.sqrt(adjacency.sum(axis=1))
    propagate = inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]
    network = clf.model_.network
    scaler = network.get_layer("standardize")
    mean, variance = (np.asarray(v, np.float64) for v in (scaler.mean, scaler.variance))
    x = (features - mean) / np.maximum(np.sqrt(variance), 1e-7)
    for i, name in enumerate(("gcn_1", "gcn_2")):
        kernel, bias = (np.asarray(w, np.float64) for w in network.get_layer(name).get_weights())
        x = propagate @ x @ kernel + bias
        x = np.maximum(x, 0) if i == 0 else x
    exp = np.exp(x - x.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_export_equals_the_old_exports_formula_by_hand(trained, tmp_path):
    """serving_default and predict_weighted now canonicalise the edges inside the model; on
    raw edges with a self loop, a duplicate and one direction only, they answer what the
    canonical_edges-then-model export answered (here in float64 by hand)."""
    clf, _ = trained
    rng = np.random.default_rng(3)
    features = rng.normal(size=(12, clf.num_features_)).astype(np.float32)
    edges = np.array([[0, 1], [1, 2], [2, 0], [3, 4], [4, 5], [5, 5], [6, 7], [7, 6], [0, 1]])
    edges = np.concatenate([edges, rng.integers(0, 12, size=(10, 2))]).astype(np.int64)
    weights = rng.uniform(0.5, 3.0, len(edges)).astype(np.float32)
    served = tf.saved_model.load(str(clf.export(tmp_path / "export"))).signatures
    feeds = {"node_features": tf.constant(features), "edges": tf.constant(edges)}
    for name, extra, edge_weights in (
        ("serving_default", {}, np.ones(len(edges))),
        ("predict_weighted", {"edge_weights": tf.constant(weights)}, weights),
    ):
        out = served[name](**feeds, **extra)
        expected = _gcn_by_hand(clf, features.astype(np.float64), edges, edge_weights)
        np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["score"].numpy(), expected.max(axis=1), rtol=1e-5)
        labels = np.array(clf.class_names_)[expected.argmax(axis=1)]
        assert [b.decode() for b in out["label"].numpy()] == labels.tolist()


def test_saved_keras_model_takes_the_raw_edge_table(trained):
    """model.keras canonicalises raw edges itself: the training graph's edge table (one
    direction, a duplicate, a self loop) as row numbers gives predict_proba's numbers."""
    clf, out = trained
    nodes, edges = (
        pd.read_csv(out.parent / "graph" / name, keep_default_na=False)
        for name in ("nodes.csv", "edges.csv")
    )
    position = {node: i for i, node in enumerate(nodes.id)}
    raw = {
        "node_features": nodes.drop(columns=["id", "label"]).to_numpy(np.float32),
        "edges": edges.map(position.get).to_numpy(np.int64),
    }
    model = keras.saving.load_model(out / "model.keras")
    expected = clf.predict_proba(clf._training_graph())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(raw)), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("model", "extra"),
    [("gat", {}), ("sage", {"batching": "sampled", "batch_size": 8, "fanout": 3})],
)
def test_gat_and_sampled_sage_learn_the_karate_factions(model, extra, tmp_path):
    clf = NodeClassifier(model=model, epochs=40, test_split=0.3, seed=1, **extra)
    clf.fit("karate", out=tmp_path / model, progress=False)
    rows = read_history(tmp_path / model / "history.csv")
    assert rows[-1]["loss"] < rows[0]["loss"] and clf.metrics_["accuracy"] >= 0.8


def test_gcnii_and_appnp_default_to_their_papers_settings_unless_set():
    gcnii = NodeClassifier(model="gcnii")
    s = gcnii.settings
    assert (s.layers, s.hidden, s.dropout, s.alpha, s.identity_lambda) == (64, 64, 0.6, 0.1, 0.5)
    assert (s.weight_decay, s.conv_weight_decay, s.learning_rate, s.epochs) == (
        5e-4,
        0.01,
        0.01,
        1500,
    )
    assert s.early_stopping_patience == 100
    assert gcnii.get_params()["layers"] is None  # unset stays unset in the recipe file
    appnp = NodeClassifier(model="appnp", dropout=0.2).settings
    assert (appnp.layers, appnp.hidden, appnp.propagation_steps, appnp.alpha) == (2, 64, 10, 0.1)
    assert (appnp.weight_decay, appnp.dropout, appnp.propagation_dropout) == (5e-3, 0.2, 0.5)
    assert (
        NodeClassifier().settings.hidden == 16 and NodeClassifier(model="gat").settings.hidden == 8
    )


# Small, fast versions of the deep models (their paper settings otherwise).
DEEP = {"gcnii": {"layers": 8}, "appnp": {}}


@pytest.fixture(scope="module", params=sorted(DEEP))
def deep(request, tmp_path_factory):
    """A gcnii or appnp fit on a write_block_graph() folder: (recipe, scratch folder)."""
    folder = tmp_path_factory.mktemp(request.param)
    data = write_block_graph(folder / "graph")[0].parent
    params = {"model": request.param, "epochs": 60, "seed": 0, **DEEP[request.param]}
    return NodeClassifier(**params).fit(str(data), out=folder / "run", progress=False), folder


def test_gcnii_and_appnp_learn_the_blocks_with_weight_decay_per_layer_group(deep):
    clf, folder = deep
    rows = read_history(folder / "run" / "history.csv")
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.7 and clf.metrics_["accuracy"] > 0.75
    network = clf.model_.network

    def decay(name):  # L2(decay / 2) on the kernel: its gradient is decay * W
        regularizer = network.get_layer(name).kernel_regularizer
        return 2 * regularizer.l2 if regularizer else 0.0

    if clf.config.model == "gcnii":
        names = ("dense_in", "dense_out", "gcnii_1", "gcnii_8")
        assert [decay(n) for n in names] == pytest.approx([5e-4, 5e-4, 0.01, 0.01])
    else:
        assert [decay("dense_1"), decay("dense_2")] == pytest.approx([5e-3, 0.0])


def test_epochs_are_kept_by_validation_cross_entropy_not_the_loss_with_its_penalty(deep):
    """The loss holds the L2 penalty (large for GCNII's decayed layers); the kept epoch is
    the one with the lowest validation cross-entropy, as the papers and PyG choose."""
    clf, folder = deep
    rows = read_history(folder / "run" / "history.csv")
    assert all(r["val_loss"] > r["val_cross_entropy"] + 1e-4 for r in rows)
    c = clf.config
    graph = with_split(clf.load_graph(str(folder / "graph")), c.val_split, c.test_split, c.seed)
    val = graph.masks["val"] & (graph.labels >= 0)
    chosen = clf.predict_proba(graph)[val, graph.labels[val]]
    best = min(r["val_cross_entropy"] for r in rows)
    assert float(-np.log(chosen).mean()) == pytest.approx(best, abs=1e-4)


def test_gcnii_and_appnp_save_load_predict_and_export_alike(deep, serving):
    """The contract's checks (test_contract.py) on the deep models: save -> load -> predict,
    the saved Keras model on raw edges, and the export in a TensorFlow-only process, all on
    an unseen graph (inductive)."""
    from contract_cases import CASES
    from test_contract import assert_same

    clf, folder = deep
    case = CASES["classify-nodes"]
    inputs = case.inputs(folder)
    answers = case.answers(clf, inputs)
    loaded = Recipe.load(clf.save(folder / "saved"))
    assert_same(case.answers(loaded, inputs), answers, rtol=1e-6, atol=1e-7)
    io = case.keras_io(clf, inputs)
    model = keras.saving.load_model(clf.run_.model_file)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(io.raw)), io.expected, atol=1e-5)
    outputs = serving.start().call(clf.export(), case.feeds(clf, inputs))
    assert_same(outputs, answers, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(
    not (PLANETOID / "ind.cora.x").is_file(), reason="Planetoid Cora files not present"
)
def test_planetoid_public_split():
    graph = load_planetoid(PLANETOID)
    assert graph.features.shape == (2708, 1433) and len(graph.class_names) == 7
    assert [int(graph.masks[s].sum()) for s in ("train", "val", "test")] == [140, 500, 1000]
    assert np.bincount(graph.labels[graph.masks["train"]]).tolist() == [20] * 7
    assert len(graph.edges) == 10556  # 5,278 undirected edges, both directions, no self loops


def test_cli_trains_predicts_and_evaluates(block_graph, tmp_path, capsys):
    nodes, edges = block_graph
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys,
        "classify-nodes",
        "--nodes",
        nodes,
        "--edges",
        edges,
        "--model",
        "sage",
        "--epochs",
        "30",
        "--out",
        out,
        "--json",
        "--set",
        "full_batch_max_nodes=50",
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["metrics"]["accuracy"] > 0.6 and Path(summary["export"]).is_dir()
    assert "sampled mini-batches" in (out / "report.html").read_text()  # 90 nodes > 50: sampled
    code, stdout, _ = cli(capsys, "predict", out, "--json", "--output", tmp_path / "p.csv")
    assert code == 0 and len(json.loads(stdout)) == 15
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "node,label,probability,top_k"
    code, stdout, _ = cli(capsys, "predict", out, "--nodes", nodes, "--edges", edges, "--json")
    assert code == 0 and len(json.loads(stdout)) == 90
    code, stdout, _ = cli(capsys, "evaluate", out, "--data", nodes, "--json")
    assert code == 0 and json.loads(stdout)["samples"] == 75


def test_recipe_file_runs(tmp_path, capsys):
    recipe = Path(__file__).parents[1] / "recipes" / "nodes_karate.toml"
    code, stdout, err = cli(
        capsys, "run", recipe, "--set", "epochs=5", "--out", tmp_path / "k", "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["metrics"]["samples"] == 10  # 30% of 34 members held out for test


def _table(folder: Path, nodes: dict, edges: dict) -> tuple[Path, Path]:
    folder.mkdir()
    pd.DataFrame(nodes).to_csv(folder / "nodes.csv", index=False)
    pd.DataFrame(edges).to_csv(folder / "edges.csv", index=False)
    return folder / "nodes.csv", folder / "edges.csv"


BASE = {"id": ["a", "b", "c", "d"], "x": [0.1, 0.2, 0.3, 0.4], "label": ["p", "q", "p", "q"]}
RING = {"source": ["a", "b", "c"], "target": ["b", "c", "d"]}


@pytest.mark.parametrize(
    ("nodes", "edges", "fragments"),
    [
        (
            BASE,
            {"source": ["a", "zz", "yy"], "target": ["b", "c", "a"]},
            ["unknown node id", "'zz'", "'yy'"],
        ),
        ({**BASE, "id": ["a", "b", "b", "d"]}, RING, ["duplicate node ids", "'b'"]),
        ({**BASE, "label": ["", "", "", ""]}, RING, ["no labelled nodes"]),
        (
            {**BASE, "label": ["p", "q", "p", "r"], "split": ["train", "train", "val", "test"]},
            RING,
            ["'r'", "only in test"],
        ),
        ({**BASE, "x": ["0.1", "lots", "0.3", "0.4"]}, RING, ["'x'", "not numeric", "'lots'"]),
    ],
)
def test_bad_graphs_are_one_line_errors_and_write_nothing(
    nodes, edges, fragments, tmp_path, capsys
):
    node_file, edge_file = _table(tmp_path / "data", nodes, edges)
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys, "classify-nodes", "--nodes", node_file, "--edges", edge_file, "--out", out
    )
    assert_user_error(code, stdout, err, *fragments)
    assert not out.exists()


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    code, out, err = cli(capsys, "classify-nodes", "--model", "gin", "--out", tmp_path / "r")
    assert_user_error(code, out, err, "'model' is 'gin'", "gcn, gat, sage")
    code, out, err = cli(
        capsys, "classify-nodes", "--nodes", tmp_path / "n.csv", "--out", tmp_path / "r"
    )
    assert_user_error(code, out, err, "--nodes and --edges go together")
    code, out, err = cli(
        capsys, "classify-nodes", "--data", f"planetoid:{tmp_path}", "--out", tmp_path / "r"
    )
    assert_user_error(code, out, err, "no ind.*.x file")
    assert not (tmp_path / "r").exists()
