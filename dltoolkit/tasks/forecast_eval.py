"""Forecast evaluation: naive baselines, MSE/MAE (scaled and in units), MASE, coverage, plots."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def naive(past: np.ndarray, horizon: int) -> np.ndarray:
    """Last-value repeat: (N, lookback, T) -> (N, horizon, T)."""
    return np.repeat(past[:, -1:], horizon, axis=1)


def seasonal_naive(past: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The last full season repeated: y[t + h] = y[t + h - season * k]."""
    last = past[:, -season:]
    reps = -(-horizon // season)
    return np.tile(last, (1, reps, 1))[:, :horizon]


def mase_scale(train: np.ndarray, season: int) -> np.ndarray:
    """Per-target in-sample MAE of the (seasonal) naive one-step forecast on the training rows."""
    m = season if season > 1 and len(train) > season else 1
    scale = np.abs(train[m:] - train[:-m]).mean(axis=0)
    return np.where(scale > 0, scale, np.nan)


def point_scores(actual, forecast, mean, std, scale) -> dict:
    """MSE/MAE on the z-scored scale (as papers report) and in original units, and MASE."""
    error = forecast - actual
    scaled = error / std
    per_target_mae = np.abs(error).mean(axis=(0, 1))
    ratios = per_target_mae / scale
    return {
        "mse": float(np.mean(scaled**2)),
        "mae": float(np.mean(np.abs(scaled))),
        "mse_units": float(np.mean(error**2)),
        "mae_units": float(np.mean(np.abs(error))),
        "mase": float(np.nanmean(ratios)) if np.isfinite(ratios).any() else None,
    }


def forecast_metrics(
    past, actual, forecast, *, mean, std, scale, season, names, quantiles=None, levels=()
) -> dict:
    """Model metrics, the same for the baselines ('naive_mse', ...), per target, coverage.

    `past` (N, lookback, T), `actual`/`forecast` (N, horizon, T) in original units;
    `quantiles` (N, horizon, T, Q) at `levels` when the model has them.
    """
    horizon = actual.shape[1]
    metrics = {
        **point_scores(actual, forecast, mean, std, scale),
        "windows": int(len(actual)),
        "horizon": int(horizon),
    }
    baselines = {"naive": naive(past, horizon)}
    if 1 < season <= past.shape[1]:
        baselines["seasonal_naive"] = seasonal_naive(past, horizon, season)
    for name, guess in baselines.items():
        for key, value in point_scores(actual, guess, mean, std, scale).items():
            metrics[f"{name}_{key}"] = value
    if quantiles is not None:
        low, high = quantiles[..., 0], quantiles[..., -1]
        metrics["coverage"] = float(np.mean((actual >= low) & (actual <= high)))
        metrics["interval"] = f"{levels[0]:g}-{levels[-1]:g}"
    metrics["per_target"] = {
        name: point_scores(actual[..., [i]], forecast[..., [i]], mean[i], std[i], scale[[i]])
        for i, name in enumerate(names)
    }
    return metrics


def comparison_rows(metrics: dict) -> list[dict]:
    """The model beside each baseline, one row each (for tables)."""
    keys = ("mse", "mae", "mse_units", "mae_units", "mase")
    rows = [{"forecast": "model", **{k: metrics[k] for k in keys}}]
    for name in ("naive", "seasonal_naive"):
        if f"{name}_mse" in metrics:
            rows.append(
                {"forecast": name.replace("_", "-"), **{k: metrics[f"{name}_{k}"] for k in keys}}
            )
    return rows


def plot_forecasts(
    past, actual, forecast, names, *, quantiles=None, count=4, target_limit=3
) -> Figure:
    """Forecast vs actual (with the outer quantile band) for `count` evenly spaced windows."""
    picks = np.unique(np.linspace(0, len(actual) - 1, min(count, len(actual))).astype(int))
    targets = min(len(names), target_limit)
    fig = Figure(figsize=(4.2 * len(picks), 2.8 * targets))
    axes = fig.subplots(targets, len(picks), squeeze=False)
    horizon = actual.shape[1]
    shown = min(past.shape[1], 3 * horizon)
    for col, w in enumerate(picks):
        for row in range(targets):
            ax = axes[row, col]
            before = np.arange(-shown, 0)
            after = np.arange(horizon)
            ax.plot(before, past[w, -shown:, row], color="grey", lw=1, label="history")
            ax.plot(after, actual[w, :, row], color="black", lw=1.2, label="actual")
            ax.plot(after, forecast[w, :, row], color="tab:blue", lw=1.2, label="forecast")
            if quantiles is not None:
                ax.fill_between(
                    after,
                    quantiles[w, :, row, 0],
                    quantiles[w, :, row, -1],
                    color="tab:blue",
                    alpha=0.2,
                    label="interval",
                )
            ax.set_title(f"{names[row]} — test window {w}", fontsize=9)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    return fig
