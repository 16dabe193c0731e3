"""Detect anomalies: `AnomalyDetector`'s parameters and its `dltoolkit detect-anomalies` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import SCHEDULES, TrainConfig
from dltoolkit.core.params import inherited, param
from dltoolkit.registry import STRICT, RecipeSpec

ROW_MODELS = ("dense", "denoising", "sparse", "vae")
WINDOW_MODELS = ("conv", "lstm")
MODELS = ROW_MODELS + WINDOW_MODELS
THRESHOLDS = ("contamination", "quantile", "best-f1")
SCORES = ("hybrid", "reconstruction")
VAE_SCORES = ("reconstruction", "elbo")
NAN_POLICIES = ("error", "impute")


@dataclass
class AnomalyDetectorConfig(TrainConfig):
    """Parameters of AnomalyDetector (see the README's 'detect anomalies' section)."""

    # a few passes (PyOD's AutoEncoder default too) learn the bulk of the rows before the
    # autoencoders also fit the rare ones; a constant rate, not warmup + cosine, likewise
    # (ADBench, benchmarks/RESULTS.md: both scored higher than training longer)
    epochs: int = param(
        10, "Training epochs (a few passes scored best on ADBench).", ge=1, cli=True
    )
    batch_size: int = param(128, "Global batch size (split across replicas).", ge=1, cli=True)
    learning_rate: float = param(
        3e-3, "Learning rate (constant unless --set schedule=cosine).", gt=0, cli=True
    )
    weight_decay: float = param(1e-4, "AdamW's decoupled weight decay.", ge=0)
    schedule: str = param("constant", "Learning-rate schedule after the warmup.", choices=SCHEDULES)
    warmup_epochs: float = param(0.0, "Linear warmup, in epochs.", ge=0)
    early_stopping_patience: int = param(
        10, "Stop after this many epochs without a better validation loss (0: never).", ge=0
    )
    # epochs take a fraction of a second: a checkpoint at each would cost more than the epoch
    checkpoint_seconds: float = inherited(TrainConfig, "checkpoint_seconds", default=60.0)
    model: str | None = param(
        None,
        "dense (default), denoising, sparse or vae for rows; conv (default with --window) "
        "or lstm for windows.",
        choices=MODELS,
        cli=True,
    )
    hidden: str = param("64,32", "Hidden layer sizes, e.g. 64,32.", cli=True)
    latent: int = param(0, "Code size (0: auto).", ge=0, cli=True)
    members: int = param(
        5, "Autoencoders in the ensemble (their errors are averaged).", ge=1, cli=True
    )
    score: str = param(
        "hybrid",
        "hybrid (default: geometric mean of reconstruction error and distance from the "
        "median, per feature) or reconstruction.",
        choices=SCORES,
        cli=True,
    )
    dropout: float = param(0.0, "Dropout after the hidden layers.", ge=0, lt=1)
    noise: float = param(0.2, "denoising: std of the Gaussian input noise while training.", ge=0)
    sparsity: float = param(1e-3, "sparse: L1 penalty on the code's activity.", ge=0)
    beta: float = param(1.0, "vae: weight of the KL term (in training, and in elbo scores).", ge=0)
    vae_score: str = param(
        "reconstruction",
        "vae: reconstruction, or elbo (adds beta times the KL term to the score).",
        choices=VAE_SCORES,
    )
    window: int = param(
        0,
        "Score sliding windows of this many rows (time series; with --model conv or lstm).",
        ge=0,
        cli=True,
    )
    time_col: str | None = param(
        None, "Time column: rows are sorted by it (and windows report their time span).", cli=True
    )
    label_col: str | None = param(
        None,
        "0/1 (or two-valued) anomaly label: used for evaluation and thresholds only, never "
        "for training.",
        cli=True,
    )
    columns: str | None = param(
        None, "Feature columns, comma-separated (default: all but label and time).", cli=True
    )
    categorical: str | None = param(
        None, "Columns to one-hot encode although numeric, comma-separated.", cli=True
    )
    max_categories: int = param(
        50,
        "Text columns with at most this many values are one-hot encoded (others left out).",
        ge=0,
    )
    nan: str = param(
        "error",
        "NaN/inf values: error (default) or impute (training median).",
        choices=NAN_POLICIES,
        cli=True,
    )
    threshold: str = param(
        "contamination",
        "contamination (default), quantile or best-f1 (needs --label-col).",
        choices=THRESHOLDS,
        cli=True,
    )
    contamination: float = param(
        0.05, "Expected share of anomalies, in (0, 0.5).", gt=0, lt=0.5, cli=True
    )
    quantile: float = param(
        0.99, "Score quantile for --threshold quantile, e.g. 0.99.", gt=0, lt=1, cli=True
    )
    val_split: float = param(0.2, "Share of the rows for validation.", ge=0, lt=1)
    test_split: float = param(0.2, "Share of the rows for the test.", ge=0, lt=1)
    top_k: int = param(15, "Top anomalies listed in the report.", ge=0)

    @property
    def autoencoder(self) -> str:
        """The model to build: `model`, else conv for windows and dense for rows."""
        if self.model is not None:
            return self.model
        return "conv" if self.window else "dense"


SPEC = RecipeSpec(
    task="detect-anomalies",
    recipe="dltoolkit.tasks.anomaly_detector:AnomalyDetector",
    config=AnomalyDetectorConfig,
    summary="Train an anomaly detector (built-in breast-cancer table when --data is not given).",
    default_data="breast-cancer",
    predict_options=(STRICT,),
)
