"""Graph neural network layers (GCN, GAT, GraphSAGE) and the node-classification model.

Every graph layer is called as `layer(x, edges, edge_weights)`: `x` is (N, F) node features,
`edges` (E, 2) int32 rows `(source, target)` indexing rows of `x` (a message flows from
source to target, so list both directions for an undirected graph), `edge_weights` (E,).
The layers add their own self loops, so `edges` should hold none. Written with keras.ops
(gathers and segment sums), so each layer lifts into any Keras 3 model.

`build_node_model` is the network trained on such canonical edge lists (whole graphs or
sampled subgraphs); `RawGraphModel`, saved as model.keras, wraps it for edge lists as users
have them (`CanonicalEdges`, TensorFlow ops: one direction, duplicates, self loops)."""

from __future__ import annotations

import keras
from keras import ops

from dltoolkit.data.graphs import canonical_edges

DEFAULT_HIDDEN = {"gcn": 16, "gat": 8, "sage": 64}


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
    """Kipf & Welling's D^-1/2 (A + I) D^-1/2 as per-edge coefficients (self loops included).

    Degrees are weighted in-degrees at the target, so every node has degree >= 1.
    """
    sources, targets, weights = with_self_loops(edges, edge_weights, num_nodes)
    degree = ops.segment_sum(weights, targets, num_segments=num_nodes)
    inv_sqrt = ops.rsqrt(degree)
    coefficients = ops.take(inv_sqrt, sources) * weights * ops.take(inv_sqrt, targets)
    return sources, targets, coefficients


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
        sources, targets, coefficients = gcn_norm(edges, edge_weights, n)
        h = ops.matmul(x, self.kernel)  # transform first: E x units is cheaper than E x F
        messages = ops.take(h, sources, axis=0) * coefficients[:, None]
        return self._finish(ops.segment_sum(messages, targets, num_segments=n))

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


def build_node_model(
    kind: str,
    num_features: int,
    num_classes: int,
    *,
    hidden: int | None = None,
    layers: int = 2,
    heads: int = 8,
    dropout: float = 0.5,
    attention_dropout: float = 0.5,
    weight_decay: float = 5e-4,
    feature_norm: keras.layers.Layer | None = None,
) -> keras.Model:
    """A node classifier: inputs {features (N, F), edges (E, 2), edge_weights (E,)},
    output class probabilities (N, classes). The last hidden layer is named "embedding".

    `weight_decay` is an L2 penalty on every kernel (the papers' Adam weight decay: the
    penalty is weight_decay/2 * ||W||^2, so its gradient is weight_decay * W).
    """
    hidden = hidden or DEFAULT_HIDDEN[kind]
    features = keras.Input((num_features,), name="features")
    edges = keras.Input((2,), dtype="int32", name="edges")
    edge_weights = keras.Input((), name="edge_weights")
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    x = feature_norm(features) if feature_norm is not None else features
    for i in range(layers):
        last = i == layers - 1
        if last:
            x = keras.layers.Identity(name="embedding")(x)
        x = keras.layers.Dropout(dropout)(x)
        units, activation = (
            (num_classes, None) if last else (hidden, "elu" if kind == "gat" else "relu")
        )
        common = {
            "activation": activation,
            "kernel_regularizer": regularizer,
            "name": f"{kind}_{i + 1}",
        }
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
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(
        {"features": features, "edges": edges, "edge_weights": edge_weights},
        probabilities,
        name=f"{kind}_node_classifier",
    )


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
