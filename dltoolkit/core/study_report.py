"""A study's report.html (core/report.py's page): the optimisation history, the parameters'
importances, the best trial and every trial, with what the test split said once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState

from dltoolkit.core.report import Report


def write_study_report(out: Path, study: optuna.Study, document: dict) -> Path:
    """Write `out`/report.html for `study` (with study.json's `document`)."""
    objective = document["objective"]
    metric, direction = objective["metric"], objective["direction"]
    trials = [t for t in study.get_trials(deepcopy=False) if "surplus" not in t.user_attrs]
    report = Report(f"Study {document['study']}: {document['task']}", out / "plots")
    report.text(
        "How the study chose",
        f"Each trial was scored on the validation split only ({direction} {metric}); the "
        "best configuration was then retrained into best/, and the test split was scored "
        "once, there. The test figures below played no part in the choice.",
    )
    for heading, rows in summary_tables(document):
        report.table(heading, rows)
    if any(t.state == TrialState.COMPLETE for t in trials):
        report.figure("Optimisation history", plot_history(trials, metric, direction), "history")
        importances = _importances(study)
        if importances:
            report.figure(
                "Parameter importances (fANOVA)", plot_importances(importances), "importance"
            )
    report.table("Trials", [_row(t, metric) for t in trials])
    report.write(out / "report.html")
    return out / "report.html"


def summary_tables(document: dict) -> list[tuple[str, dict]]:
    """The headline tables of a study (study.json's `document`): its counts and best trial,
    the test metrics of the retrained best, the best parameters."""
    tables = [
        (
            f"Study {document['study']}",
            {
                "storage": document["storage"],
                "trials asked": document["trials"],
                **{f"trials {k}": v for k, v in document.get("states", {}).items()},
                "best trial": document.get("best_trial", ""),
                f"best validation {document['objective']['metric']}": document.get(
                    "best_value", ""
                ),
            },
        ),
        ("Test metrics of the retrained best (scored once)", document.get("test_metrics")),
        ("Best parameters", document.get("best_params")),
    ]
    return [(heading, rows) for heading, rows in tables if rows]


def _importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances; empty while too few trials differ to tell."""
    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        return {}


def _row(trial, metric: str) -> dict:
    seconds = trial.duration.total_seconds() if trial.duration else None
    return {
        "trial": trial.number,
        "state": trial.state.name.lower(),
        metric: trial.value if trial.value is not None else "",
        "seconds": round(seconds, 1) if seconds is not None else "",
        "run": trial.user_attrs.get("run", ""),
        **trial.params,
        "error": trial.user_attrs.get("error", ""),
    }


def plot_history(trials: list, metric: str, direction: str) -> Figure:
    """Each completed trial's value and the best so far; pruned trials at their last report."""
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    numbers = np.array([t.number for t in done])
    values = np.array([t.value for t in done])
    ax.scatter(numbers, values, s=18, label="completed")
    pick = np.minimum if direction == "minimize" else np.maximum
    ax.step(numbers, pick.accumulate(values), where="post", color="tab:red", label="best so far")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [t.intermediate_values[t.last_step] for t in pruned],
            s=18,
            marker="x",
            color="grey",
            label="pruned (last epoch reported)",
        )
    ax.set(xlabel="trial", ylabel=f"validation {metric}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return fig


def plot_importances(importances: dict[str, float]) -> Figure:
    names = list(importances)[::-1]
    fig = Figure(figsize=(6, 0.35 * len(names) + 1))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (share of the variance of the validation metric)")
    return fig
