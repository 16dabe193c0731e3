"""Graph neural network layers (GCN, GAT, GraphSAGE, GCNII, APPNP) and the node-classification model.

The one-hop layers are called as `layer(x, edges, edge_weights)`: `x` is (N, F) node features,
`edges` (E, 2) int32 rows `(source, target)` indexing rows of `x` (a message flows from
source to target, so list both directions for an undirected graph), `edge_weights` (E,).
They add their own self loops, so `edges` should hold none. The deep propagation models
normalise the graph once (`GCNNorm`: self loops and D^-1/2 (A + I) D^-1/2 as per-edge
coefficients) and their layers take that `adjacency` (see `gcn_norm`). Written with
keras.ops (gathers and segment sums), except `propagate`, the product with the normalised
adjacency: TensorFlow's CSR sparse-matrix kernels, which on a CPU run it several times
faster than a gather and a segment sum (its gradient too).

`build_node_model` is the network trained on such canonical edge lists (whole graphs or
sampled subgraphs); `RawGraphModel`, saved as model.keras, wraps it for edge lists as users
have them (`CanonicalEdges`, TensorFlow ops: one direction, duplicates, self loops)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from dltoolkit.data.graphs import canonical_edges


def _num_nodes(x):
    return ops.shape(x)[0]


def with_self_loops(edges, edge_weights, num_nodes):
    """(sources, targets, weights) with one weight-1 self loop appended per node."""
    loops = ops.arange(num_nodes, dtype=edges.dtype)
    sources = ops.concatenate([edges[:, 0], loops])
    targets = ops.concatenate([edges[:, 1], loops])
    weights = ops.concatenate([edge_weights, ops.ones((num_nodes,), edge_weights.dtype)])
    return sources, targets, weights


def gcn_norm(edges, edge_weights, num_nodes):
    """Kipf & Welling's D^-1/2 (A + I) D^-1/2 as per-edge coefficients (self loops included):
    the `adjacency` (sources, targets, coefficients, by_source) with the edges in (target,
    source) order and `by_source` the order that sorts them by (source, target).

    Degrees are weighted in-degrees at the target, so every node has degree >= 1.
    """
    sources, targets, weights = with_self_loops(edges, edge_weights, num_nodes)
    degree = ops.segment_sum(weights, targets, num_segments=num_nodes)
    inv_sqrt = ops.rsqrt(degree)
    coefficients = ops.take(inv_sqrt, sources) * weights * ops.take(inv_sqrt, targets)
    order = ops.argsort(_pair_keys(targets, sources, num_nodes))
    sources, targets, coefficients = (ops.take(t, order) for t in (sources, targets, coefficients))
    return sources, targets, coefficients, ops.argsort(_pair_keys(sources, targets, num_nodes))


def _pair_keys(first, second, num_nodes):
    """One int64 per (first, second) pair that sorts them by first, then second."""
    first, second = ops.cast(first, "int64"), ops.cast(second, "int64")
    return first * ops.cast(num_nodes, "int64") + second


def propagate(x, adjacency, num_nodes):
    """A x for a `gcn_norm` `adjacency`: each node's sum over its in-edges of the source's row
    of `x` times the edge's coefficient. The gradient is the transposed product, from the
    edges in `by_source` order; none flows to the coefficients."""
    sources, targets, coefficients, by_source = adjacency
    coefficients = tf.cast(coefficients, tf.float32)
    forward = _csr_matrix(targets, sources, coefficients, num_nodes)

    @tf.custom_gradient
    def product(h):
        def gradient(upstream):
            transposed = _csr_matrix(
                *(tf.gather(t, by_source) for t in (sources, targets, coefficients)), num_nodes
            )
            return tf.raw_ops.SparseMatrixMatMul(a=transposed, b=upstream)

        return tf.raw_ops.SparseMatrixMatMul(a=forward, b=h), gradient

    return tf.cast(product(tf.cast(x, tf.float32)), x.dtype)


def _csr_matrix(rows, columns, values, size):
    """A (size, size) CSRSparseMatrix from entries in (row, column) order."""
    indices = tf.cast(tf.stack([rows, columns], axis=1), tf.int64)
    shape = tf.cast(tf.stack([size, size]), tf.int64)
    return tf.raw_ops.SparseTensorToCSRSparseMatrix(
        indices=indices, values=values, dense_shape=shape
    )


class _GraphLayer(keras.layers.Layer):
    """Shared config of the graph layers: units, activation, bias, kernel regularizer."""

    def __init__(
        self, units: int, activation=None, use_bias=True, kernel_regularizer=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def _kernel(self, name, shape):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer="glorot_uniform",
            regularizer=self.kernel_regularizer,
        )

    def _bias(self, size):
        return (
            self.add_weight(name="bias", shape=(size,), initializer="zeros")
            if self.use_bias
            else None
        )

    def _finish(self, out):
        if self.bias is not None:
            out = out + self.bias
        return self.activation(out)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


@keras.saving.register_keras_serializable(package="dltoolkit")
class GCNConv(_GraphLayer):
    """Graph convolution (Kipf & Welling 2017): D^-1/2 (A + I) D^-1/2 X W + b."""

    def build(self, x_shape, edges_shape=None, edge_weights_shape=None):
        self.kernel = self._kernel("kernel", (x_shape[-1], self.units))
        self.bias = self._bias(self.units)

    def call(self, x, edges, edge_weights):
        n = _num_nodes(x)
        h = ops.matmul(x, self.kernel)  # transform first: E x units is cheaper than E x F
        return self._finish(propagate(h, gcn_norm(edges, edge_weights, n), n))

    def compute_output_shape(self, x_shape, *args):
        return (x_shape[0], self.units)


@keras.saving.register_keras_serializable(package="dltoolkit")
class GATConv(_GraphLayer):
    """Graph attention (Veličković et al. 2018): `heads` attention heads over each node's
    in-neighbours and itself; heads are concatenated (`concat=True`) or averaged.
    `attention_dropout` drops attention coefficients while training. Edge weights are ignored.
    """

    def __init__(
        self, units, heads=8, concat=True, attention_dropout=0.0, negative_slope=0.2, **kwargs
    ):
        super().__init__(units, **kwargs)
        self.heads = heads
        self.concat = concat
        self.attention_dropout = attention_dropout
        self.negative_slope = negative_slope
        self.dropout = keras.layers.Dropout(attention_dropout)

    def build(self, x_shape, edges_shape=None, edge_weights_shape=None):
        self.kernel = self._kernel("kernel", (x_shape[-1], self.heads * self.units))
        self.attention_source = self._kernel("attention_source", (self.heads, self.units))
        self.attention_target = self._kernel("attention_target", (self.heads, self.units))
        self.bias = self._bias(self._out_units())

    def _out_units(self):
        return self.heads * self.units if self.concat else self.units

    def call(self, x, edges, edge_weights, training=None):
        n = _num_nodes(x)
        sources, targets, _ = with_self_loops(edges, edge_weights, n)
        h = ops.reshape(ops.matmul(x, self.kernel), (-1, self.heads, self.units))
        score_source = ops.sum(h * self.attention_source, axis=-1)  # (N, heads)
        score_target = ops.sum(h * self.attention_target, axis=-1)
        logits = ops.leaky_relu(
            ops.take(score_source, sources, axis=0) + ops.take(score_target, targets, axis=0),
            negative_slope=self.negative_slope,
        )
        alpha = segment_softmax(logits, targets, n)  # (E + N, heads)
        alpha = self.dropout(alpha, training=training)
        messages = ops.take(h, sources, axis=0) * alpha[:, :, None]
        out = ops.segment_sum(messages, targets, num_segments=n)
        out = (
            ops.reshape(out, (-1, self.heads * self.units))
            if self.concat
            else ops.mean(out, axis=1)
        )
        return self._finish(out)

    def compute_output_shape(self, x_shape, *args):
        return (x_shape[0], self._out_units())

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "concat": self.concat,
            "attention_dropout": self.attention_dropout,
            "negative_slope": self.negative_slope,
        }


@keras.saving.register_keras_serializable(package="dltoolkit")
class SAGEConv(_GraphLayer):
    """GraphSAGE with the mean aggregator (Hamilton et al. 2017): X W_self + mean_{j->i}(x_j) W_neigh.

    The mean is weighted by edge weight; a node without in-neighbours aggregates zeros.
    """

    def build(self, x_shape, edges_shape=None, edge_weights_shape=None):
        self.kernel_self = self._kernel("kernel_self", (x_shape[-1], self.units))
        self.kernel_neighbours = self._kernel("kernel_neighbours", (x_shape[-1], self.units))
        self.bias = self._bias(self.units)

    def call(self, x, edges, edge_weights):
        n = _num_nodes(x)
        sources, targets = edges[:, 0], edges[:, 1]
        h = ops.matmul(x, self.kernel_neighbours)
        total = ops.segment_sum(
            ops.take(h, sources, axis=0) * edge_weights[:, None], targets, num_segments=n
        )
        weight = ops.segment_sum(edge_weights, targets, num_segments=n)
        mean = total / ops.maximum(weight, 1e-12)[:, None]
        return self._finish(ops.matmul(x, self.kernel_self) + mean)

    def compute_output_shape(self, x_shape, *args):
        return (x_shape[0], self.units)


def segment_softmax(logits, segment_ids, num_segments):
    """Softmax of `logits` (E, ...) within each group of equal `segment_ids` (numerically stable)."""
    peak = ops.segment_max(logits, segment_ids, num_segments=num_segments)
    exp = ops.exp(logits - ops.take(peak, segment_ids, axis=0))
    total = ops.segment_sum(exp, segment_ids, num_segments=num_segments)
    return exp / ops.take(total, segment_ids, axis=0)


@keras.saving.register_keras_serializable(package="dltoolkit")
class RowNormalize(keras.layers.Layer):
    """Scale each row to sum to 1 (bag-of-words features, as in the GCN/GAT papers); zero rows stay zero."""

    def call(self, x):
        total = ops.sum(ops.abs(x), axis=-1, keepdims=True)
        return x / ops.where(total > 0, total, ops.ones_like(total))


@keras.saving.register_keras_serializable(package="dltoolkit")
class GCNNorm(keras.layers.Layer):
    """(x, edges, edge_weights) -> the `adjacency` of `gcn_norm`: computed once for all the
    layers of a deep model."""

    def call(self, x, edges, edge_weights):
        return gcn_norm(edges, edge_weights, _num_nodes(x))

    def compute_output_spec(self, x, edges, edge_weights):
        dtypes = (edges.dtype, edges.dtype, edge_weights.dtype, "int32")
        return tuple(keras.KerasTensor((None,), dtype=dtype) for dtype in dtypes)


@keras.saving.register_keras_serializable(package="dltoolkit")
class GCNIIConv(_GraphLayer):
    """GCNII layer (Chen et al. 2020): P = (1 - alpha) A x + alpha x0 (initial residual: x0
    is the first layer's output), then (1 - beta) P + beta P W (identity mapping), with A
    the normalised `adjacency` and beta = log(lambda / layer + 1), smaller in deeper layers.
    `units` is the width of x and x0; no bias (as the paper)."""

    def __init__(self, units, alpha=0.1, beta=0.5, activation="relu", use_bias=False, **kwargs):
        super().__init__(units, activation=activation, use_bias=use_bias, **kwargs)
        self.alpha, self.beta = alpha, beta

    def build(self, x_shape, x0_shape=None, adjacency_shape=None):
        self.kernel = self._kernel("kernel", (self.units, self.units))
        self.bias = self._bias(self.units)

    def call(self, x, x0, adjacency):
        mixed = (1 - self.alpha) * propagate(x, adjacency, _num_nodes(x)) + self.alpha * x0
        return self._finish((1 - self.beta) * mixed + self.beta * ops.matmul(mixed, self.kernel))

    def compute_output_shape(self, x_shape, *args):
        return (x_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="dltoolkit")
class APPNPPropagation(keras.layers.Layer):
    """APPNP's propagation (Klicpera et al. 2019): `steps` power-iteration steps of the
    personalised PageRank, z <- (1 - alpha) A z + alpha h from z = h, with A the normalised
    `adjacency`; while training each step drops edges at rate `dropout`. No weights."""

    def __init__(self, steps=10, alpha=0.1, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.alpha, self.dropout_rate = steps, alpha, dropout
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, h, adjacency, training=None):
        n, (sources, targets, coefficients, by_source) = _num_nodes(h), adjacency
        z = h
        for _ in range(self.steps):
            kept = self.dropout(coefficients, training=training)
            z = (1 - self.alpha) * propagate(z, (sources, targets, kept, by_source), n)
            z = z + self.alpha * h
        return z

    def compute_output_shape(self, h_shape, *args):
        return h_shape

    def get_config(self):
        return {
            **super().get_config(),
            "steps": self.steps,
            "alpha": self.alpha,
            "dropout": self.dropout_rate,
        }


def build_node_model(
    kind: str,
    num_features: int,
    num_classes: int,
    *,
    hidden: int,
    layers: int,
    dropout: float,
    weight_decay: float,
    heads: int = 8,
    attention_dropout: float = 0.5,
    conv_weight_decay: float = 0.01,
    alpha: float = 0.1,
    identity_lambda: float = 0.5,
    propagation_steps: int = 10,
    propagation_dropout: float = 0.5,
    feature_norm: keras.layers.Layer | None = None,
) -> keras.Model:
    """A node classifier: inputs {features (N, F), edges (E, 2), edge_weights (E,)},
    output class probabilities (N, classes). The input of the output layer (appnp: the
    propagated class scores) is named "embedding".

    Weight decay is an L2 penalty on kernels (the papers' Adam weight decay: the penalty is
    decay/2 * ||W||^2, so its gradient is decay * W): `weight_decay` on every kernel of gcn,
    gat and sage, on gcnii's dense input and output layers (`conv_weight_decay` on its
    convolutions) and on appnp's first layer only, as in the papers.
    """
    features = keras.Input((num_features,), name="features")
    edges = keras.Input((2,), dtype="int32", name="edges")
    edge_weights = keras.Input((), name="edge_weights")
    x = feature_norm(features) if feature_norm is not None else features
    graph = (x, edges, edge_weights)
    if kind == "gcnii":
        x = _gcnii(
            graph,
            num_classes,
            hidden=hidden,
            layers=layers,
            dropout=dropout,
            dense_decay=_l2(weight_decay),
            conv_decay=_l2(conv_weight_decay),
            alpha=alpha,
            identity_lambda=identity_lambda,
        )
    elif kind == "appnp":
        x = _appnp(
            graph,
            num_classes,
            hidden=hidden,
            layers=layers,
            dropout=dropout,
            first_decay=_l2(weight_decay),
            propagation=APPNPPropagation(
                propagation_steps, alpha, propagation_dropout, name="propagation"
            ),
        )
    else:
        x = _one_hop(
            kind,
            graph,
            num_classes,
            hidden=hidden,
            layers=layers,
            heads=heads,
            dropout=dropout,
            attention_dropout=attention_dropout,
            decay=_l2(weight_decay),
        )
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(
        {"features": features, "edges": edges, "edge_weights": edge_weights},
        probabilities,
        name=f"{kind}_node_classifier",
    )


def _l2(decay: float):
    return keras.regularizers.L2(decay / 2) if decay else None


def _one_hop(kind, graph, num_classes, *, hidden, layers, heads, dropout, attention_dropout, decay):
    """gcn, gat or sage: `layers` graph layers, dropout on each one's input."""
    x, edges, edge_weights = graph
    for i in range(layers):
        last = i == layers - 1
        if last:
            x = keras.layers.Identity(name="embedding")(x)
        x = keras.layers.Dropout(dropout)(x)
        units, activation = (
            (num_classes, None) if last else (hidden, "elu" if kind == "gat" else "relu")
        )
        common = {"activation": activation, "kernel_regularizer": decay, "name": f"{kind}_{i + 1}"}
        if kind == "gcn":
            layer = GCNConv(units, **common)
        elif kind == "gat":
            layer = GATConv(
                units,
                heads=1 if last else heads,
                concat=not last,
                attention_dropout=attention_dropout,
                **common,
            )
        else:
            layer = SAGEConv(units, **common)
        x = layer(x, edges, edge_weights)
    return x


def _gcnii(
    graph, num_classes, *, hidden, layers, dropout, dense_decay, conv_decay, alpha, identity_lambda
):
    """A dense layer to `hidden` units (x0), `layers` GCNII convolutions, a dense output layer;
    dropout on the input of each."""
    x, edges, edge_weights = graph
    adjacency = GCNNorm(name="gcn_norm")(x, edges, edge_weights)
    x = keras.layers.Dropout(dropout)(x)
    x0 = x = keras.layers.Dense(
        hidden, activation="relu", kernel_regularizer=dense_decay, name="dense_in"
    )(x)
    for layer in range(1, layers + 1):
        x = keras.layers.Dropout(dropout)(x)
        x = GCNIIConv(
            hidden,
            alpha=alpha,
            beta=math.log(identity_lambda / layer + 1),
            kernel_regularizer=conv_decay,
            name=f"gcnii_{layer}",
        )(x, x0, adjacency)
    x = keras.layers.Identity(name="embedding")(x)
    x = keras.layers.Dropout(dropout)(x)
    return keras.layers.Dense(num_classes, kernel_regularizer=dense_decay, name="dense_out")(x)


def _appnp(graph, num_classes, *, hidden, layers, dropout, first_decay, propagation):
    """An MLP of `layers` dense layers (dropout on the input of each; weight decay on the
    first), its class scores then propagated by `propagation`."""
    x, edges, edge_weights = graph
    adjacency = GCNNorm(name="gcn_norm")(x, edges, edge_weights)
    for i in range(layers):
        last = i == layers - 1
        x = keras.layers.Dropout(dropout)(x)
        x = keras.layers.Dense(
            num_classes if last else hidden,
            activation=None if last else "relu",
            kernel_regularizer=first_decay if i == 0 else None,
            name=f"dense_{i + 1}",
        )(x)
    x = propagation(x, adjacency)
    return keras.layers.Identity(name="embedding")(x)


@keras.saving.register_keras_serializable(package="dltoolkit")
class CanonicalEdges(keras.layers.Layer):
    """Raw (source, target) rows and weights -> the edge list the graph layers expect: both
    directions unless `directed`, no self loops, duplicates merged (see `canonical_edges`)."""

    def __init__(self, directed: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.directed = directed

    def call(self, node_features, edges, edge_weights):
        return canonical_edges(edges, edge_weights, ops.shape(node_features)[0], self.directed)

    def get_config(self):
        return {**super().get_config(), "directed": self.directed}


@keras.saving.register_keras_serializable(package="dltoolkit")
class RawGraphModel(keras.Model):
    """A graph as users have it -> class probabilities (N, classes) from `network` (a
    `build_node_model` model). Input: a dict of "node_features" (N, F), "edges" (E, 2)
    integer (source, target) rows and, optionally, "edge_weights" (E,) (default: ones).
    """

    def __init__(self, network: keras.Model, directed: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.directed = directed
        self.canonical_edges = CanonicalEdges(directed, name="canonical_edges")
        self.built = network.built  # no weights of its own

    def call(self, inputs, training=None):
        features, edges = inputs["node_features"], inputs["edges"]
        weights = inputs.get("edge_weights")
        if weights is None:
            weights = ops.ones(ops.shape(edges)[:1])
        edges, weights = self.canonical_edges(features, edges, weights)
        graph = {"features": features, "edges": edges, "edge_weights": weights}
        return self.network(graph, training=training)

    def get_config(self):
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "directed": self.directed,
        }

    @classmethod
    def from_config(cls, config):
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        return cls(network, **config)
