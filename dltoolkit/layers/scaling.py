"""Z-scoring as Keras layers: learned per-feature mean and spread, saved in the layer config.

`Standardize` maps raw values to z-scores on the way in, `Unstandardize` maps z-scores back
to units on the way out. The statistics run along one axis (by default the last, the
features); e.g. `axis=-2` un-scales a (batch, horizon, targets, quantiles) forecast per
target. They are small (one number per feature), so they live in `get_config`.
Both compute in float32 whatever the global dtype policy (mixed precision included).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


class _PerFeature(keras.layers.Layer):
    """Holds `mean` and `std` (1-D) and broadcasts them along `axis` (negative)."""

    def __init__(self, mean, std, axis: int = -1, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if axis >= 0:
            raise ValueError(f"axis counts from the end (-1, -2, ...), got {axis}")
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.axis = axis

    def _stats(self):
        shape = (len(self.mean),) + (1,) * (-self.axis - 1)
        return np.reshape(self.mean, shape), np.reshape(self.std, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "axis": self.axis,
        }


@keras.saving.register_keras_serializable(package="dltoolkit")
class Standardize(_PerFeature):
    """(x - mean) / std: raw values to z-scores."""

    def call(self, x):
        mean, std = self._stats()
        return (ops.cast(x, "float32") - mean) / std


@keras.saving.register_keras_serializable(package="dltoolkit")
class Unstandardize(_PerFeature):
    """x * std + mean: z-scores back to raw units."""

    def call(self, x):
        mean, std = self._stats()
        return ops.cast(x, "float32") * std + mean
