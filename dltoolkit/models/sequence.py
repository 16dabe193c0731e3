"""Sequence models for direct multi-horizon forecasting, and the pinball (quantile) loss.

`SequenceForecaster` maps a scaled window (B, lookback, inputs) to (B, horizon, targets),
or (B, horizon, targets, quantiles) when trained for quantiles; targets are the first
input channels. With `instance_norm` (RevIN-style) each window is standardised by its own
mean and spread per channel and the forecast is mapped back, which makes the models robust
to level shifts between training and test. Channel-independent models (`linear`,
`dlinear`, `patch-transformer`) forecast each target from its own past with shared weights;
the others (`tsmixer` and the recurrent and mixing Transformer models) mix every input
channel, covariates included.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dltoolkit.core.config import check_choice
from dltoolkit.core.errors import ConfigError
from dltoolkit.specs.forecast import CHANNEL_INDEPENDENT, MODELS, NORMS

_PACKAGE = "dltoolkit"


def check_model(
    name: str, *, lookback: int, patch_len: int, d_model: int, heads: int, norm: str
) -> None:
    """Reject an unknown model or normalisation, or sizes the model cannot use (ConfigError)."""
    check_choice("model", name, MODELS)
    check_choice("norm", norm, NORMS)
    if name == "patch-transformer" and patch_len > lookback:
        raise ConfigError(
            f"patch_len {patch_len} is longer than lookback {lookback}; lower patch_len"
        )
    if name in ("patch-transformer", "transformer") and d_model % heads:
        raise ConfigError(f"d_model {d_model} must be a multiple of heads {heads}")


@keras.saving.register_keras_serializable(_PACKAGE)
class SequenceForecaster(keras.Model):
    """One forecasting network; `model` picks the family (see MODELS)."""

    def __init__(
        self,
        model: str,
        lookback: int,
        inputs: int,
        targets: int,
        horizon: int,
        quantiles: int = 0,
        instance_norm: bool = True,
        d_model: int = 16,
        layers_: int = 3,
        heads: int = 4,
        ff_dim: int = 128,
        dropout: float = 0.2,
        patch_len: int = 16,
        stride: int = 8,
        units: int = 64,
        kernel: int = 25,
        norm: str = "layer",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.spec = {
            "model": model,
            "lookback": lookback,
            "inputs": inputs,
            "targets": targets,
            "horizon": horizon,
            "quantiles": quantiles,
            "instance_norm": instance_norm,
            "d_model": d_model,
            "layers_": layers_,
            "heads": heads,
            "ff_dim": ff_dim,
            "dropout": dropout,
            "patch_len": patch_len,
            "stride": stride,
            "units": units,
            "kernel": kernel,
            "norm": norm,
        }
        outputs = max(quantiles, 1)
        if model == "linear":
            self.body = ChannelLinear(horizon, outputs)
        elif model == "dlinear":
            self.body = DLinear(horizon, outputs, kernel)
        elif model == "patch-transformer":
            self.body = PatchTransformer(
                horizon,
                outputs,
                lookback,
                patch_len,
                stride,
                d_model,
                layers_,
                heads,
                ff_dim,
                dropout,
                norm,
            )
        elif model == "tsmixer":
            self.body = TSMixer(
                horizon, outputs, targets, lookback, inputs, layers_, ff_dim, dropout, norm
            )
        elif model == "transformer":
            self.body = MixingTransformer(
                horizon, outputs, targets, lookback, d_model, layers_, heads, ff_dim, dropout, norm
            )
        else:
            self.body = Recurrent(horizon, outputs, targets, model, units, layers_, dropout)
        self.channel_independent = model in CHANNEL_INDEPENDENT

    def call(self, x, training=False):
        targets = self.spec["targets"]
        x = ops.cast(x, "float32")
        if self.spec["instance_norm"]:
            mean = ops.mean(x, axis=1, keepdims=True)
            std = ops.sqrt(ops.var(x, axis=1, keepdims=True) + 1e-5)
            x = (x - mean) / std
        body_in = x[..., :targets] if self.channel_independent else x
        y = ops.cast(self.body(body_in, training=training), "float32")  # (B, H, T, Q)
        if self.spec["instance_norm"]:
            y = y * std[:, :, :targets, None] + mean[:, :, :targets, None]
        return y if self.spec["quantiles"] else y[..., 0]

    def get_config(self):
        return {**super().get_config(), **self.spec}


def _to_horizon(y, targets: int, horizon: int, outputs: int):
    """(B, targets, horizon * outputs) -> (B, horizon, targets, outputs)."""
    y = ops.reshape(y, (-1, targets, horizon, outputs))
    return ops.transpose(y, (0, 2, 1, 3))


@keras.saving.register_keras_serializable(_PACKAGE)
class ChannelLinear(layers.Layer):
    """One linear map from the past `lookback` values to the next `horizon`, per channel."""

    def __init__(self, horizon: int, outputs: int, **kwargs):
        super().__init__(**kwargs)
        self.horizon, self.outputs = horizon, outputs
        self.dense = layers.Dense(horizon * outputs)

    def call(self, x):
        channels = ops.shape(x)[-1]
        return _to_horizon(
            self.dense(ops.transpose(x, (0, 2, 1))), channels, self.horizon, self.outputs
        )

    def get_config(self):
        return {**super().get_config(), "horizon": self.horizon, "outputs": self.outputs}


@keras.saving.register_keras_serializable(_PACKAGE)
class DLinear(layers.Layer):
    """DLinear (Zeng et al. 2023): moving-average trend + remainder, one linear map each."""

    def __init__(self, horizon: int, outputs: int, kernel: int = 25, **kwargs):
        super().__init__(**kwargs)
        self.horizon, self.outputs, self.kernel = horizon, outputs, kernel
        self.trend = ChannelLinear(horizon, outputs)
        self.seasonal = ChannelLinear(horizon, outputs)
        self.pool = layers.AveragePooling1D(kernel, strides=1, padding="valid")

    def call(self, x):
        left, right = (self.kernel - 1) // 2, self.kernel // 2
        padded = ops.concatenate(
            [ops.repeat(x[:, :1], left, axis=1), x, ops.repeat(x[:, -1:], right, axis=1)], axis=1
        )
        trend = self.pool(padded)
        return self.trend(trend) + self.seasonal(x - trend)

    def get_config(self):
        return {
            **super().get_config(),
            "horizon": self.horizon,
            "outputs": self.outputs,
            "kernel": self.kernel,
        }


@keras.saving.register_keras_serializable(_PACKAGE)
class EncoderBlock(layers.Layer):
    """Transformer encoder block: self-attention and a feed-forward net, each residual.

    `norm="layer"`: pre-norm with LayerNormalization; `norm="batch"`: post-norm with
    BatchNormalization over the feature axis, as PatchTST uses for time series.
    """

    def __init__(
        self, d_model: int, heads: int, ff_dim: int, dropout: float, norm: str = "layer", **kwargs
    ):
        super().__init__(**kwargs)
        self.d_model, self.heads, self.ff_dim, self.dropout = d_model, heads, ff_dim, dropout
        self.norm_type = norm
        self.norm1, self.norm2 = _normalization(norm), _normalization(norm)
        self.attention = layers.MultiHeadAttention(heads, d_model // heads, dropout=dropout)
        self.ff1 = layers.Dense(ff_dim, activation="gelu")
        self.ff2 = layers.Dense(d_model)
        self.drop = layers.Dropout(dropout)

    def call(self, h, training=False):
        if self.norm_type == "layer":
            a = self.norm1(h)
            h = h + self.drop(self.attention(a, a, training=training), training=training)
            f = self.ff2(self.drop(self.ff1(self.norm2(h)), training=training))
            return h + self.drop(f, training=training)
        h = self.norm1(
            h + self.drop(self.attention(h, h, training=training), training=training),
            training=training,
        )
        f = self.ff2(self.drop(self.ff1(h), training=training))
        return self.norm2(h + self.drop(f, training=training), training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "heads": self.heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "norm": self.norm_type,
        }


def _normalization(norm: str) -> layers.Layer:
    """An encoder block's normalisation over the feature axis (see NORMS)."""
    if norm == "layer":
        return layers.LayerNormalization(epsilon=1e-5)
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)


class _Encoder(layers.Layer):
    """Shared parts of the two Transformers: embedding, learned positions, encoder blocks."""

    def __init__(
        self,
        length: int,
        d_model: int,
        layers_: int,
        heads: int,
        ff_dim: int,
        dropout: float,
        norm: str = "layer",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.length, self.width = length, d_model
        self.embed = layers.Dense(d_model)
        self.positions = layers.Embedding(length, d_model)
        self.blocks = [EncoderBlock(d_model, heads, ff_dim, dropout, norm) for _ in range(layers_)]
        self.drop = layers.Dropout(dropout)
        # Pre-norm blocks leave the residual stream unnormalised: close it with a LayerNorm.
        self.norm = layers.LayerNormalization(epsilon=1e-5) if norm == "layer" else None

    def encode(self, tokens, training):
        h = self.embed(tokens) + self.positions(ops.arange(self.length))
        h = self.drop(h, training=training)
        for block in self.blocks:
            h = block(h, training=training)
        if self.norm is not None:
            h = self.norm(h)
        return ops.reshape(h, (-1, self.length * self.width))


@keras.saving.register_keras_serializable(_PACKAGE)
class PatchTransformer(_Encoder):
    """PatchTST-style (Nie et al. 2023): each channel alone, cut into overlapping patches."""

    def __init__(
        self,
        horizon: int,
        outputs: int,
        lookback: int,
        patch_len: int,
        stride: int,
        d_model: int,
        layers_: int,
        heads: int,
        ff_dim: int,
        dropout: float,
        norm: str = "layer",
        **kwargs,
    ):
        patches = (lookback - patch_len) // stride + 2  # +1 from padding the end by `stride`
        super().__init__(patches, d_model, layers_, heads, ff_dim, dropout, norm, **kwargs)
        self.args = {
            "horizon": horizon,
            "outputs": outputs,
            "lookback": lookback,
            "patch_len": patch_len,
            "stride": stride,
            "d_model": d_model,
            "layers_": layers_,
            "heads": heads,
            "ff_dim": ff_dim,
            "dropout": dropout,
            "norm": norm,
        }
        starts = ops.arange(patches)[:, None] * stride
        self.index = ops.convert_to_numpy(starts + ops.arange(patch_len)[None, :])
        self.head = layers.Dense(horizon * outputs)

    def call(self, x, training=False):
        a = self.args
        channels = ops.shape(x)[-1]
        series = ops.reshape(ops.transpose(x, (0, 2, 1)), (-1, a["lookback"]))
        series = ops.concatenate([series, ops.repeat(series[:, -1:], a["stride"], axis=1)], axis=1)
        tokens = ops.take(series, self.index, axis=1)  # (B*C, patches, patch_len)
        y = self.head(self.encode(tokens, training))
        return _to_horizon(
            ops.reshape(y, (-1, channels, a["horizon"] * a["outputs"])),
            channels,
            a["horizon"],
            a["outputs"],
        )

    def get_config(self):
        return {**layers.Layer.get_config(self), **self.args}


@keras.saving.register_keras_serializable(_PACKAGE)
class MixingTransformer(_Encoder):
    """A Transformer encoder over time steps, each token embedding every input channel."""

    def __init__(
        self,
        horizon: int,
        outputs: int,
        targets: int,
        lookback: int,
        d_model: int,
        layers_: int,
        heads: int,
        ff_dim: int,
        dropout: float,
        norm: str = "layer",
        **kwargs,
    ):
        super().__init__(lookback, d_model, layers_, heads, ff_dim, dropout, norm, **kwargs)
        self.args = {
            "horizon": horizon,
            "outputs": outputs,
            "targets": targets,
            "lookback": lookback,
            "d_model": d_model,
            "layers_": layers_,
            "heads": heads,
            "ff_dim": ff_dim,
            "dropout": dropout,
            "norm": norm,
        }
        self.head = layers.Dense(targets * horizon * outputs)

    def call(self, x, training=False):
        a = self.args
        y = self.head(self.encode(x, training))
        return _to_horizon(y, a["targets"], a["horizon"], a["outputs"])

    def get_config(self):
        return {**layers.Layer.get_config(self), **self.args}


@keras.saving.register_keras_serializable(_PACKAGE)
class MixerBlock(layers.Layer):
    """TSMixer block: an MLP across time steps (shared by the channels), then one across
    channels (shared by the time steps), each normalised first and added back."""

    def __init__(
        self, length: int, channels: int, ff_dim: int, dropout: float, norm: str, **kwargs
    ):
        super().__init__(**kwargs)
        self.args = {
            "length": length,
            "channels": channels,
            "ff_dim": ff_dim,
            "dropout": dropout,
            "norm": norm,
        }
        self.time_norm, self.channel_norm = _window_norm(norm), _window_norm(norm)
        self.time_mlp = layers.Dense(length, activation="relu")
        self.channel_in = layers.Dense(ff_dim, activation="relu")
        self.channel_out = layers.Dense(channels)
        self.drop = layers.Dropout(dropout)

    def call(self, h, training=False):
        t = ops.transpose(self.time_norm(h, training=training), (0, 2, 1))
        h = h + self.drop(ops.transpose(self.time_mlp(t), (0, 2, 1)), training=training)
        f = self.channel_in(self.channel_norm(h, training=training))
        f = self.channel_out(self.drop(f, training=training))
        return h + self.drop(f, training=training)

    def get_config(self):
        return {**super().get_config(), **self.args}


class _WindowBatchNorm(layers.Layer):
    """BatchNormalization with one statistic per (time step, channel) of a window."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)

    def call(self, h, training=False):
        shape = ops.shape(h)
        flat = ops.reshape(h, (-1, shape[1] * shape[2]))
        return ops.reshape(self.norm(flat, training=training), shape)


def _window_norm(norm: str) -> layers.Layer:
    """A mixer block's normalisation over each whole window (time steps x channels)."""
    if norm == "layer":
        return layers.LayerNormalization(axis=(-2, -1), epsilon=1e-5)
    return _WindowBatchNorm()


@keras.saving.register_keras_serializable(_PACKAGE)
class TSMixer(layers.Layer):
    """TSMixer (Chen et al. 2023): mixer blocks over every input channel, then one linear
    map per target from the mixed window to the horizon."""

    def __init__(
        self,
        horizon: int,
        outputs: int,
        targets: int,
        lookback: int,
        inputs: int,
        layers_: int,
        ff_dim: int,
        dropout: float,
        norm: str = "batch",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.args = {
            "horizon": horizon,
            "outputs": outputs,
            "targets": targets,
            "lookback": lookback,
            "inputs": inputs,
            "layers_": layers_,
            "ff_dim": ff_dim,
            "dropout": dropout,
            "norm": norm,
        }
        self.blocks = [MixerBlock(lookback, inputs, ff_dim, dropout, norm) for _ in range(layers_)]
        self.head = ChannelLinear(horizon, outputs)

    def call(self, x, training=False):
        h = x
        for block in self.blocks:
            h = block(h, training=training)
        return self.head(h[..., : self.args["targets"]])

    def get_config(self):
        return {**super().get_config(), **self.args}


@keras.saving.register_keras_serializable(_PACKAGE)
class Recurrent(layers.Layer):
    """Stacked LSTM/GRU/SimpleRNN over every input channel; the last state feeds a dense head."""

    def __init__(
        self,
        horizon: int,
        outputs: int,
        targets: int,
        cell: str,
        units: int,
        layers_: int,
        dropout: float,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.args = {
            "horizon": horizon,
            "outputs": outputs,
            "targets": targets,
            "cell": cell,
            "units": units,
            "layers_": layers_,
            "dropout": dropout,
        }
        kind = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}[cell]
        self.rnns = [
            kind(units, return_sequences=i < layers_ - 1, dropout=dropout) for i in range(layers_)
        ]
        self.head = layers.Dense(targets * horizon * outputs)

    def call(self, x, training=False):
        h = x
        for rnn in self.rnns:
            h = rnn(h, training=training)
        a = self.args
        return _to_horizon(self.head(h), a["targets"], a["horizon"], a["outputs"])

    def get_config(self):
        return {**super().get_config(), **self.args}


@keras.saving.register_keras_serializable(_PACKAGE)
class MemberStack(keras.Model):
    """Networks side by side, their forecasts stacked on axis 1 (B, members, ...): one step
    trains them all, each on its own loss (`OverMembers`); four DLinears cost about 2.3
    single fits on ETTh1."""

    def __init__(self, members: list, **kwargs):
        super().__init__(**kwargs)
        self.members = list(members)

    def call(self, x, training=False):
        return ops.stack([m(x, training=training) for m in self.members], axis=1)

    def get_config(self):
        members = [keras.saving.serialize_keras_object(m) for m in self.members]
        return {**super().get_config(), "members": members}

    @classmethod
    def from_config(cls, config):
        members = [keras.saving.deserialize_keras_object(m) for m in config.pop("members")]
        return cls(members, **config)


@keras.saving.register_keras_serializable(_PACKAGE)
class AveragedForecaster(MemberStack):
    """The mean forecast (and mean quantiles) of networks trained apart: a seed ensemble."""

    def call(self, x, training=False):
        return ops.mean(super().call(x, training=training), axis=1)


@keras.saving.register_keras_serializable(_PACKAGE)
class OverMembers(keras.losses.Loss):
    """A forecast loss (a keras Loss; also a metric's values) of a `MemberStack`'s stacked
    forecasts against one target: each member's loss, averaged over the members."""

    def __init__(self, loss, name=None, **kwargs):
        self.inner = keras.losses.get(loss)
        super().__init__(name=name or self.inner.name, **kwargs)

    def call(self, y_true, y_pred):
        return self.inner.call(ops.expand_dims(ops.cast(y_true, y_pred.dtype), 1), y_pred)

    def get_config(self):
        return {**super().get_config(), "loss": keras.losses.serialize(self.inner)}


@keras.saving.register_keras_serializable(_PACKAGE)
class PinballLoss(keras.losses.Loss):
    """Mean pinball (quantile) loss of (B, H, T, Q) forecasts against (B, H, T) actuals."""

    def __init__(self, quantiles, name="pinball", **kwargs):
        super().__init__(name=name, **kwargs)
        self.quantiles = [float(q) for q in quantiles]

    def call(self, y_true, y_pred):
        error = ops.expand_dims(ops.cast(y_true, y_pred.dtype), -1) - y_pred
        q = ops.convert_to_tensor(self.quantiles, dtype=y_pred.dtype)
        return ops.mean(ops.maximum(q * error, (q - 1.0) * error), axis=-1)

    def get_config(self):
        return {**super().get_config(), "quantiles": self.quantiles}
