"""Forecast series: `Forecaster`'s parameters and its `dltoolkit forecast` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import TrainConfig
from dltoolkit.core.params import among, between, only, param
from dltoolkit.registry import STRICT, Objective, RecipeSpec

MODELS = (
    "patch-transformer",
    "dlinear",
    "linear",
    "tsmixer",
    "lstm",
    "gru",
    "rnn",
    "transformer",
)
CHANNEL_INDEPENDENT = ("patch-transformer", "dlinear", "linear")
AUTO = "auto"  # choose among AUTO_MODELS on validation
AUTO_MODELS = ("linear", "dlinear", "patch-transformer")  # cheapest first
NORMS = ("layer", "batch")
# The parameters a model reads (model auto trains the patch Transformer and DLinear).
TRANSFORMERS = ("patch-transformer", "transformer", AUTO)
NETWORKS = (*TRANSFORMERS, "tsmixer", "lstm", "gru", "rnn")  # all but the linear ones
FILLS = ("error", "ffill", "interpolate", "drop")
LOSSES = ("mse", "mae", "huber")


@dataclass
class ForecasterConfig(TrainConfig):
    """Parameters of Forecaster (see the README's 'forecast series' section)."""

    epochs: int = param(30, "Training epochs.", ge=1, cli=True)
    batch_size: int = param(64, "Global batch size (split across replicas).", ge=1, cli=True)
    learning_rate: float = param(
        1e-3,
        "Peak learning rate (warmup then cosine decay).",
        gt=0,
        cli=True,
        tune=between(1e-4, 1e-2, log=True),
    )
    weight_decay: float = param(
        1e-4, "AdamW's decoupled weight decay.", ge=0, tune=between(1e-6, 1e-1, log=True)
    )
    model: str = param(
        AUTO,
        "auto (train linear, dlinear and patch-transformer; keep the best on validation), "
        "patch-transformer (PatchTST-style), dlinear, linear, tsmixer (TSMixer), lstm, gru, rnn or "
        "transformer.",
        choices=(*MODELS, AUTO),
        cli=True,
        tune=among(*CHANNEL_INDEPENDENT, "tsmixer"),
    )
    members: int = param(
        1,
        "Networks of the model trained from different seeds (seed, seed+1, ...) whose "
        "forecasts are averaged.",
        ge=1,
        cli=True,
    )
    lookback: int = param(
        96, "Past rows the model reads.", ge=1, cli=True, tune=among(96, 192, 336, 512, 720)
    )
    horizon: int = param(24, "Future steps to forecast.", ge=1, cli=True)
    target: str | None = param(
        None,
        "Column(s) to forecast, comma-separated (default: the only numeric column).",
        flags=("--target", "--targets"),
        cli=True,
    )
    covariates: str | None = param(
        None,
        "Comma-separated input-only columns (needs tsmixer, lstm, gru, rnn or transformer).",
        cli=True,
    )
    all_columns: bool = param(False, "Forecast every numeric column (multivariate).", cli=True)
    time_col: str | None = param(
        None, "Time column (default: the first date-like column, if any).", cli=True
    )
    fill: str = param(
        "error", "Missing values: error, ffill, interpolate or drop.", choices=FILLS, cli=True
    )
    val_split: float = param(0.2, "Share of the rows for validation (in time order).", ge=0, lt=1)
    test_split: float = param(0.2, "Share of the rows for the test (the last ones).", ge=0, lt=1)
    split_rows: str | None = param(
        None, "Exact train,val,test row counts, e.g. 8640,2880,2880 (overrides the splits)."
    )
    season: int | None = param(
        None,
        "Seasonal period for the seasonal-naive baseline (default: from the time step).",
        ge=1,
        cli=True,
    )
    quantiles: str | None = param(
        None, "Quantile levels for prediction intervals, e.g. 0.1,0.5,0.9.", cli=True
    )
    loss: str = param(
        "mse", "Training loss of the point forecast.", choices=LOSSES, tune=among(*LOSSES)
    )
    instance_norm: bool = param(
        True,
        "Standardise each input window by its own statistics (RevIN-style).",
        tune=among(True, False),
    )
    d_model: int = param(
        16,
        "Transformers: width of the encoder.",
        ge=1,
        tune=among(16, 32, 64, 128),
        only=only("model", *TRANSFORMERS),
    )
    layers: int = param(
        3,
        "Encoder blocks (Transformers), mixer blocks (tsmixer) or recurrent layers.",
        ge=1,
        tune=between(1, 4),
        only=only("model", *NETWORKS),
    )
    heads: int = param(4, "Transformers: attention heads.", ge=1, only=only("model", *TRANSFORMERS))
    ff_dim: int = param(
        128,
        "Transformers and tsmixer: feed-forward width.",
        ge=1,
        tune=among(64, 128, 256),
        only=only("model", *TRANSFORMERS, "tsmixer"),
    )
    dropout: float = param(
        0.2, "Dropout.", ge=0, lt=1, tune=between(0.0, 0.5), only=only("model", *NETWORKS)
    )
    norm: str = param(
        "layer",
        "Transformers: pre-norm LayerNorm, or PatchTST's post-norm BatchNorm; tsmixer: the same "
        "over each whole window.",
        choices=NORMS,
        only=only("model", *TRANSFORMERS, "tsmixer"),
    )
    patch_len: int = param(
        16,
        "patch-transformer: rows per patch.",
        ge=1,
        tune=among(8, 12, 16, 24, 32),
        only=only("model", "patch-transformer", AUTO),
    )
    stride: int = param(
        8,
        "patch-transformer: rows between patch starts.",
        ge=1,
        tune=among(4, 8, 16),
        only=only("model", "patch-transformer", AUTO),
    )
    units: int = param(
        64, "Recurrent models: units per layer.", ge=1, only=only("model", "lstm", "gru", "rnn")
    )
    kernel: int = param(
        25,
        "dlinear: moving-average kernel of the trend.",
        ge=1,
        only=only("model", "dlinear", AUTO),
    )
    plot_windows: int = param(4, "Test windows drawn in the report.", ge=0)


SPEC = RecipeSpec(
    task="forecast",
    recipe="dltoolkit.tasks.forecaster:Forecaster",
    config=ForecasterConfig,
    summary="Train a forecaster (built-in CO2 sample series when --data is not given).",
    default_data="co2",
    data_help="Series: CSV or Parquet file, or a built-in series (co2, sunspots).",
    predict_options=(STRICT,),
    # The z-scored MSE of the validation windows, as papers report it (whatever the loss).
    objective=Objective("mse", epoch_metric="val_mse"),
)
