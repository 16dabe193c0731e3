"""tf.data pipelines for node classification: the whole graph as one batch, or sampled subgraphs.

An element is `(inputs, labels, sample_weights)` where `inputs` are the model's inputs for
a (sub)graph and the sample weights select the nodes the loss counts, scaled so that Keras'
mean over all nodes equals the mean over the selected ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dltoolkit.data.graphs import Graph


def _weights(mask: np.ndarray, count: float | None = None) -> np.ndarray:
    return (mask * (len(mask) / max(1, mask.sum() if count is None else count))).astype(np.float32)


def full_batch(graph: Graph, mask: np.ndarray, count: float | None = None) -> tf.data.Dataset:
    """One element: the whole graph, the loss counting the nodes in `mask` as a mean over
    `count` nodes (by default the nodes in `mask`)."""
    labels = np.maximum(graph.labels, 0)
    return tf.data.Dataset.from_tensors((graph.inputs(), labels, _weights(mask, count)))


def replica_share(mask: np.ndarray, replica: int, replicas: int) -> np.ndarray:
    """Every `replicas`-th node of `mask`, starting at the `replica`-th: one replica's share."""
    return mask & ((np.cumsum(mask) - 1) % replicas == replica)


class NeighbourSampler:
    """GraphSAGE-style sampling: for a batch of seed nodes, up to `fanout` in-neighbours per
    node and layer, hop by hop (sampled with replacement when a node has more, duplicates
    merged). The subgraph holds the seeds first, then the sampled nodes, and only the sampled
    edges, so a `layers`-deep model sees exactly the sampled computation tree of each seed.
    """

    def __init__(self, graph: Graph, fanout: int, layers: int):
        self.graph, self.fanout, self.layers = graph, fanout, layers
        order = np.argsort(graph.edges[:, 1], kind="stable")
        self.sources = graph.edges[order, 0]
        self.edge_index = order
        self.indptr = np.searchsorted(graph.edges[order, 1], np.arange(graph.num_nodes + 1))

    def sample(self, seeds: np.ndarray, rng: np.random.Generator):
        """(node ids of the subgraph, its edges (E, 2) in local numbering, original edge ids)."""
        nodes, frontier, picked = list(seeds), np.asarray(seeds), []
        seen = set(nodes)
        for _ in range(self.layers):
            start, degree = self.indptr[frontier], np.diff(self.indptr)[frontier]
            take = np.minimum(degree, self.fanout)
            owner = np.repeat(np.arange(len(frontier)), take)
            offset = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
            crowded = degree[owner] > self.fanout
            offset[crowded] = (rng.random(crowded.sum()) * degree[owner][crowded]).astype(np.int64)
            position = np.unique(start[owner] + offset)
            picked.append(position)
            new = [s for s in dict.fromkeys(self.sources[position].tolist()) if s not in seen]
            seen.update(new)
            nodes += new
            frontier = np.asarray(new, np.int64)
            if not len(frontier):
                break
        edge_ids = self.edge_index[np.unique(np.concatenate(picked))]
        local = {node: i for i, node in enumerate(nodes)}
        edges = (
            np.vectorize(local.__getitem__, otypes=[np.int32])(self.graph.edges[edge_ids])
            if len(edge_ids)
            else np.zeros((0, 2), np.int32)
        )
        return np.asarray(nodes, np.int64), edges.reshape(-1, 2), edge_ids

    def dataset(
        self, mask: np.ndarray, batch_size: int, seed: int, shuffle: bool
    ) -> tf.data.Dataset:
        """Subgraphs around batches of the nodes in `mask` (reshuffled every epoch if `shuffle`)."""
        g = self.graph
        labels = np.maximum(g.labels, 0)
        targets = np.flatnonzero(mask)
        epoch = [0]

        def generate():
            rng = np.random.default_rng([seed, epoch[0]])
            epoch[0] += 1
            order = rng.permutation(targets) if shuffle else targets
            for i in range(0, len(order), batch_size):
                seeds = order[i : i + batch_size]
                nodes, edges, edge_ids = self.sample(seeds, rng)
                inputs = {
                    "features": g.features[nodes],
                    "edges": edges,
                    "edge_weights": g.weights[edge_ids],
                }
                yield inputs, labels[nodes], _weights(np.arange(len(nodes)) < len(seeds))

        signature = (
            {
                "features": tf.TensorSpec((None, g.features.shape[1]), tf.float32),
                "edges": tf.TensorSpec((None, 2), tf.int32),
                "edge_weights": tf.TensorSpec((None,), tf.float32),
            },
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None,), tf.float32),
        )
        return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)
