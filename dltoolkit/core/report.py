"""report.html: a self-contained page of tables and plots, with each plot also saved as PNG."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dltoolkit.core import files

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
"""


class Report:
    """Collects sections, then writes report.html (and plots/*.png) into a run directory."""

    def __init__(self, title: str, plots_dir: Path):
        self.title = title
        self.plots_dir = Path(plots_dir)
        self.sections: list[str] = []

    def text(self, heading: str, text: str) -> None:
        self.sections.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")

    def table(self, heading: str, rows: list[dict] | dict) -> None:
        """A table from a list of row dicts, or a two-column table from one dict."""
        if isinstance(rows, dict):
            rows = [{"": k, "value": v} for k, v in rows.items()]
        if not rows:
            return
        columns = list(dict.fromkeys(k for row in rows for k in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{_cell(row.get(c, ''))}</td>" for c in columns) + "</tr>"
            for row in rows
        )
        self.sections.append(f"<h2>{html.escape(heading)}</h2><table><tr>{head}</tr>{body}</table>")

    def figure(self, heading: str, fig: Figure, name: str) -> None:
        """Embed `fig` and save it as plots/<name>.png."""
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        png = buffer.getvalue()
        files.write_bytes(self.plots_dir / f"{name}.png", png)
        data = base64.b64encode(png).decode("ascii")
        self.sections.append(
            f'<h2>{html.escape(heading)}</h2><img alt="{html.escape(name)}" '
            f'src="data:image/png;base64,{data}">'
        )

    def write(self, path: Path) -> None:
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
            + "\n".join(self.sections)
            + "</body></html>\n"
        )
        files.write_text(path, page)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def plot_history(rows: list[dict]) -> Figure:
    """Loss and every other metric per epoch, training beside validation."""
    metrics = [k for k in rows[0] if not k.startswith("val_") and k not in _NOT_METRICS]
    fig = Figure(figsize=(5 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    epochs = [r["epoch"] for r in rows]
    for ax, metric in zip(axes, metrics, strict=True):
        ax.plot(epochs, [r.get(metric) for r in rows], label="train")
        if any(f"val_{metric}" in r for r in rows):
            ax.plot(epochs, [r.get(f"val_{metric}") for r in rows], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    return fig


_NOT_METRICS = {"epoch", "phase", "learning_rate", "seconds"}


def plot_confusion_matrix(matrix, class_names: list[str]) -> Figure:
    """A confusion matrix heat map with counts (rows: true class, columns: predicted)."""
    n = len(class_names)
    size = min(4 + 0.4 * n, 16)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        peak = matrix.max() or 1
        for i in range(n):
            for j in range(n):
                color = "white" if matrix[i, j] > peak / 2 else "black"
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color=color, fontsize=8)
    return fig


def plot_image_grid(images, titles: list[str], columns: int = 8) -> Figure:
    """Images (N, H, W, C) in [0, 255] in a grid, each with a short title."""
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(columns * 1.3, rows * 1.5))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        pixels = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        if pixels.shape[-1] == 1:
            ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(pixels)
        ax.set_title(title, fontsize=8)
    return fig


def plot_score_histogram(scores, threshold: float, labels=None, title: str = "score") -> Figure:
    """Histogram of scores (log-spaced when they span decades), split by label, with the threshold."""
    scores = np.asarray(scores, np.float64)
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    positive = scores[scores > 0]
    log = len(positive) == len(scores) and positive.max() > 100 * positive.min()
    bins = np.geomspace(positive.min(), positive.max(), 50) if log else 50
    if labels is None:
        ax.hist(scores, bins=bins, color="#4477aa")
    else:
        labels = np.asarray(labels)
        ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal")
        ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="anomaly")
    if log:
        ax.set_xscale("log")
    ax.axvline(threshold, color="red", linestyle="--", label="threshold")
    ax.legend()
    ax.set_xlabel(title)
    ax.set_ylabel("count")
    return fig


def plot_roc_pr(labels, scores) -> Figure:
    """ROC and precision-recall curves of binary `labels` ranked by `scores`."""
    from sklearn import metrics as skm

    fig = Figure(figsize=(10, 4))
    roc_ax, pr_ax = fig.subplots(1, 2)
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    roc_ax.plot(fpr, tpr)
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    roc_ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"ROC (AUC {skm.auc(fpr, tpr):.3f})",
    )
    precision, recall, _ = skm.precision_recall_curve(labels, scores)
    pr_ax.plot(recall, precision)
    pr_ax.axhline(np.mean(labels), color="grey", linestyle=":")
    pr_ax.set(
        xlabel="recall",
        ylabel="precision",
        title=f"precision-recall (AP {skm.average_precision_score(labels, scores):.3f})",
    )
    return fig
