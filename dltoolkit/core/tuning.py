"""`dltoolkit tune`: an Optuna study over a recipe's search space, every trial a run directory.

A study lives in its directory (default runs/<study>/) and in its storage: the SQLite file
study.db there unless `storage` names any database URL, so that several processes, or
machines, share one study. Trials run in processes, never threads (Keras' global state is
not thread-safe): `n_jobs` spawns them, and any number of `dltoolkit tune` commands on
one storage and study name join it. Each trial fits the recipe into trial-<n>/ and is
scored on the validation split only (`Recipe.fit(validation_only=True)`), reporting its
per-epoch validation metric to a median pruner; a trial that fails (an error, NaN, its
time limit) is recorded as failed and the study goes on. Workers stop together once
`trials` trials have ended (a trial counts when it completes, is pruned or fails; one
whose worker died is retried after its heartbeat goes stale, resuming its run directory).
At the end the best configuration is retrained into best/, where the test split is
scored once, and the study's report is written (core/study_report.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from rich.console import Console

from dltoolkit.core import config as cfg
from dltoolkit.core import files
from dltoolkit.core.errors import ConfigError, DataError, RunDirError
from dltoolkit.core.rundir import RECIPE_FILE
from dltoolkit.core.space import Space, resolve, starting_point, suggest
from dltoolkit.registry import Objective, spec, specs

STUDY_FILE = "study.json"  # marks a study directory (`dltoolkit report` reads it)
BEST_RUN = "best"
BEST_RECIPE = "best.toml"
TRIMMED_KEEPS = ("recipe.toml", "metrics.json", "history.csv")
_ENDED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclasses.dataclass
class Setup:
    """What every worker of a study needs (picklable: spawned processes receive it)."""

    task: str
    data: object
    params: dict  # the fixed parameters: recipe file, --set, the space file's fixed values
    space: dict[str, Space]
    trials: int
    out: Path
    storage: str
    study: str
    seed: int = 0
    timeout: float | None = None  # seconds per trial
    deadline: float | None = None  # time.time() at which the budget ends
    heartbeat: int = 10  # seconds; a running trial silent for twice this is taken as dead

    @property
    def objective(self) -> Objective:
        return spec(self.task).objective

    def fingerprint(self) -> dict:
        """What a study is started with; joining it with other settings is an error."""
        return {
            "task": self.task,
            "data": self.data if isinstance(self.data, str) else type(self.data).__name__,
            "params": self.params,
            "space": {k: s.describe() for k, s in sorted(self.space.items())},
        }


def tune(
    recipe,
    data=None,
    *,
    params: dict | None = None,
    overrides=(),
    space=None,
    trials: int = 20,
    budget=None,
    storage: str | None = None,
    study: str | None = None,
    out=None,
    n_jobs: int = 1,
    timeout_per_trial=None,
    seed: int = 0,
    keep: int = 3,
    retrain: bool = True,
    progress: bool = True,
    heartbeat: int = 10,
) -> dict:
    """Search `recipe`'s parameters on validation data, then retrain the best and test it once.

    `recipe` is a task name ("forecast"), a recipe class or a recipe file. `params` and
    `overrides` (`key=value`, as `--set`) fix parameters; `space`, a TOML space file or its
    table, replaces the recipe's declared search space (core/space.py). A recipe file's
    parameters are the base and the first trial, not fixed. `trials` counts every ended trial
    of the study (all its workers together); `budget` and `timeout_per_trial` are seconds
    or a duration such as "30m". The study is `study` (default tune-<task>) in `storage`
    (default sqlite in `out`, default runs/<study>); running again resumes it. `n_jobs`
    worker processes share it; `keep` trial runs stay whole, the others keep only their
    metrics and recipe files. Without `retrain` this process only adds trials (a worker
    of a study that another process finishes). Returns the study's summary.
    """
    task, doc = _target(recipe, data, params)
    recipe_spec = spec(task)
    if recipe_spec.objective is None:
        tunable = [s.task for s in specs().values() if s.objective is not None]
        raise ConfigError(f"{task} cannot be tuned yet; tunable recipes: {', '.join(tunable)}")
    doc = cfg.apply_overrides(doc, list(overrides))
    fixed = {item.partition("=")[0].strip().removeprefix("params.") for item in overrides}
    searched, pinned = resolve(recipe_spec.config, space, fixed | set(params or {}))
    base = {**doc["params"], **pinned}
    cfg.make_config(recipe_spec.config, base)  # bad fixed values fail before anything starts
    if trials < 1 or n_jobs < 1 or keep < 0:
        raise ConfigError("trials and n_jobs must be at least 1 (and keep at least 0)")
    limit = parse_duration(budget, "--budget")
    timeout = parse_duration(timeout_per_trial, "--timeout-per-trial")
    name = study or f"tune-{task}"
    out = Path(out or Path("runs") / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    setup = Setup(
        task=task,
        data=doc["data"] if doc["data"] is not None else recipe_spec.default_data,
        params=base,
        space=searched,
        trials=trials,
        out=out,
        storage=storage or f"sqlite:///{out / 'study.db'}",
        study=name,
        seed=seed,
        timeout=timeout,
        deadline=None if limit is None else time.time() + limit,
        heartbeat=heartbeat,
    )
    console = Console(stderr=True) if progress else None
    open_study(setup, worker=0)  # created (and checked) once, before any worker starts
    _describe(setup)
    if console is not None:
        console.print(
            f"study {name}: {trials} trials over {', '.join(searched)}; "
            f"{setup.objective.direction} validation {setup.objective.metric}; storage {setup.storage}",
            soft_wrap=True,
        )
    _run_workers(setup, n_jobs, progress)
    if not retrain:
        return study_summary(setup.out)
    return finish(setup, keep, console)


def parse_duration(value, option: str) -> float | None:
    """Seconds from a number of seconds or a string such as '90s', '30m', '1.5h'."""
    if value is None:
        return None
    text = str(value).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise ConfigError(f"{option} '{value}' is not a duration; write e.g. 90s, 30m or 2h")
    return seconds


def _target(recipe, data, params) -> tuple[str, dict]:
    """The task and recipe document (task, data, params) of a task name, class or file."""
    doc = {"data": data, "params": dict(params or {})}
    if isinstance(recipe, type):
        return recipe.task, doc
    if str(recipe) in specs():
        return str(recipe), doc
    if not Path(recipe).is_file():
        raise ConfigError(
            f"'{recipe}' is neither a recipe verb ({', '.join(specs())}) nor a recipe file"
        )
    saved = cfg.read_recipe_file(recipe)
    return saved["task"], {
        "data": data if data is not None else saved["data"],
        "params": {**saved["params"], **doc["params"]},
    }


# -- the study ------------------------------------------------------------------------------


def storage(url: str, heartbeat: int) -> RDBStorage:
    """An RDB storage whose SQLite connections wait for a lock (up to two minutes) instead of
    failing, with heartbeats so a dead worker's trial is failed and retried."""
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    try:
        with _quiet_optuna():
            return RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
    except Exception as err:  # SQLAlchemy: bad URL, missing driver, unreachable server
        first = str(err).strip().splitlines()[0][:200]
        raise ConfigError(f"cannot open the study storage '{url}': {first}") from None


def open_study(setup: Setup, worker: int) -> optuna.Study:
    """The study (created on first use, with the starting configuration as trial 0) and a
    TPE sampler seeded per worker (constant liar: parallel workers spread their guesses;
    multivariate over groups: parameters drawn together, such as one model's, are modelled
    jointly, and a parameter drawn only for some models only from their trials)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with _quiet_optuna():
        sampler = optuna.samplers.TPESampler(
            seed=setup.seed + worker,
            constant_liar=True,
            multivariate=True,
            group=True,
            warn_independent_sampling=False,
        )
    study = optuna.create_study(
        study_name=setup.study,
        storage=storage(setup.storage, setup.heartbeat),
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
        direction=setup.objective.direction,
        load_if_exists=True,
    )
    started = study.user_attrs.get("setup")
    if started is None:
        study.set_user_attr("setup", setup.fingerprint())
        if not study.get_trials(deepcopy=False):
            config = spec(setup.task).config
            study.enqueue_trial(starting_point(setup.space, _defaults(setup), config))
    elif started != setup.fingerprint():
        raise ConfigError(
            f"study '{setup.study}' in {setup.storage} was started with other settings "
            f"(task, data, parameters or space); name a new one with --study"
        )
    return study


def _defaults(setup: Setup) -> dict:
    return cfg.to_params(cfg.make_config(spec(setup.task).config, setup.params))


def _describe(setup: Setup) -> None:
    """study.json: where the study is stored and what it optimises."""
    files.write_json(
        setup.out / STUDY_FILE,
        {
            "study": setup.study,
            "storage": setup.storage,
            "task": setup.task,
            "objective": dataclasses.asdict(setup.objective),
            "trials": setup.trials,
            **{k: v for k, v in setup.fingerprint().items() if k != "task"},
        },
    )


def counts(trial) -> bool:
    """Whether a trial takes one of the study's `trials`: running, complete, pruned, or failed
    with an error (not one whose worker died, which is retried, nor a surplus one)."""
    return trial.state in (*_ENDED, TrialState.RUNNING) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs
    )


def ended(study) -> int:
    """The study's trials that have ended and count."""
    return sum(
        counts(t) and t.state != TrialState.RUNNING for t in study.get_trials(deepcopy=False)
    )


# -- workers and trials -----------------------------------------------------------------------


def _run_workers(setup: Setup, n_jobs: int, progress: bool) -> None:
    """This process and `n_jobs - 1` spawned ones work on the study until it is done."""
    context = multiprocessing.get_context("spawn")
    others = [
        context.Process(target=work, args=(setup, worker, progress), name=f"tune-{worker}")
        for worker in range(1, n_jobs)
    ]
    for process in others:
        process.start()
    try:
        work(setup, 0, progress)
    finally:
        for process in others:
            process.join()


def work(setup: Setup, worker: int, progress: bool = True) -> None:
    """Run trials of the study until it has its count of trials or the budget is spent."""
    study = open_study(setup, worker)
    if ended(study) >= setup.trials or _over(setup) or _hopeless(study):
        return
    study.optimize(
        lambda trial: run_trial(setup, trial),
        timeout=None if setup.deadline is None else max(1.0, setup.deadline - time.time()),
        callbacks=[_Progress(setup, Console(stderr=True) if progress else None)],
        catch=(Exception,),  # recorded as failed (with its error); the study goes on
        gc_after_trial=True,
    )


def _hopeless(study: optuna.Study) -> bool:
    """Nothing ended well and the first three failures had one error (unreadable data, a
    wrong fixed value): every trial would fail, so the workers stop."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state in _ENDED for t in trials):
        return False
    errors = [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]
    return len(errors) >= 3 and len(set(errors)) == 1


def _over(setup: Setup) -> bool:
    return setup.deadline is not None and time.time() >= setup.deadline


class _Surplus(Exception):
    """The study already has its trials: this one is dropped (failed, marked surplus)."""


def run_trial(setup: Setup, trial: optuna.Trial) -> float:
    """Fit one configuration into its trial directory; its validation metric is the value."""
    import keras
    import tensorflow as tf

    from dltoolkit.core.callbacks import TrialWatch

    tf.get_logger().setLevel("ERROR")  # trial after trial retraces predict; that is expected

    _wait_for_slot(setup, trial)
    with _quiet_optuna():
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    run = setup.out / f"trial-{trial.number if retried is None else retried}"
    trial.set_user_attr("run", run.name)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    objective = setup.objective
    try:
        values = suggest(trial, setup.space, spec(setup.task).config, setup.params)
        recipe = spec(setup.task).recipe_class()(**{**setup.params, **values})
        watch = TrialWatch(trial, objective.epoch_metric, *_limit(setup))
        resume = retried is not None and (run / RECIPE_FILE).is_file()
        recipe.fit(
            setup.data,
            run,
            resume=resume,
            overwrite=not resume,
            progress=False,
            callbacks=[watch],
            validation_only=True,
        )
        value = recipe.metrics_.get(objective.metric)
        if value is None or not math.isfinite(value):
            raise DataError(f"validation {objective.metric} is {value} (training diverged?)")
    except Exception as err:
        trial.set_user_attr("error", _one_line(err))
        raise
    finally:
        keras.backend.clear_session()
    if watch.pruned is not None:
        raise optuna.TrialPruned(f"pruned after epoch {watch.pruned + 1}")
    return float(value)


def _wait_for_slot(setup: Setup, trial: optuna.Trial) -> None:
    """Go ahead if fewer than `trials` counted trials precede this one; drop it if they have
    all ended; else wait for the running ones (a dead worker's trial goes stale and frees
    its place)."""
    while True:
        if _over(setup):
            trial.set_user_attr("surplus", "the budget ran out")
            raise _Surplus()
        with _quiet_optuna():
            optuna.storages.fail_stale_trials(trial.study)
        before = [
            t
            for t in trial.study.get_trials(deepcopy=False)
            if t.number < trial.number and counts(t)
        ]
        if len(before) < setup.trials:
            return
        if all(t.state != TrialState.RUNNING for t in before):
            trial.set_user_attr("surplus", "the study has its trials")
            raise _Surplus()
        time.sleep(1)


@contextlib.contextmanager
def _quiet_optuna():
    """Without the warnings of Optuna's heartbeat and retry helpers (experimental since 2.8)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _limit(setup: Setup) -> tuple[float | None, str]:
    """The trial's deadline (time.monotonic()) and what a timeout says."""
    limits = []
    if setup.timeout is not None:
        limits.append((setup.timeout, f"the trial took longer than {setup.timeout:g} s"))
    if setup.deadline is not None:
        limits.append((setup.deadline - time.time(), "the study's budget ran out"))
    if not limits:
        return None, ""
    seconds, reason = min(limits)
    return time.monotonic() + seconds, reason


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


class _Progress:
    """After each trial: a line on the console, and the stop rule shared by all workers."""

    def __init__(self, setup: Setup, console: Console | None):
        self.setup, self.console = setup, console

    def __call__(self, study: optuna.Study, trial) -> None:
        if (
            "surplus" in trial.user_attrs
            or ended(study) >= self.setup.trials
            or _over(self.setup)
            or _hopeless(study)
        ):
            study.stop()
        if self.console is None or "surplus" in trial.user_attrs:
            return
        metric = self.setup.objective.metric
        if trial.state == TrialState.COMPLETE:
            best = study.best_trial
            line = f"{metric} {trial.value:.4g} (best {best.value:.4g}, trial {best.number})"
        elif trial.state == TrialState.PRUNED:
            line = f"pruned after epoch {trial.last_step + 1}"
        else:
            line = f"failed: {trial.user_attrs.get('error', 'its worker stopped')}"
        self.console.print(
            f"trial {trial.number}: {line}; {ended(study)}/{self.setup.trials} done",
            markup=False,
            highlight=False,
        )


# -- the end of a study ---------------------------------------------------------------------


def finish(setup: Setup, keep: int, console: Console | None) -> dict:
    """Trim the trial runs, retrain the best configuration into best/ (the test split scored
    once, there), write best.toml and the study's report; returns the summary."""
    from dltoolkit.core.metrics import headline
    from dltoolkit.core.study_report import write_study_report

    study = open_study(setup, worker=0)
    best = best_trials(study)
    if not best:
        errors = [t.user_attrs["error"] for t in study.get_trials() if "error" in t.user_attrs]
        raise DataError(
            f"no trial of study '{setup.study}' completed"
            + (f"; the first error: {errors[0]}" if errors else "")
        )
    trim_trials(setup.out, study, keep={t.number for t in best[:keep]})
    params = {**setup.params, **best[0].params}
    cfg.write_recipe_file(setup.out / BEST_RECIPE, setup.task, setup.data, params)
    if console is not None:
        console.print(f"retraining the best configuration (trial {best[0].number}) into best/")
    summary = (
        spec(setup.task)
        .recipe_class()
        .run(
            setup.data,
            setup.out / BEST_RUN,
            params=params,
            **_best_run_mode(setup.out / BEST_RUN, setup.task, params),
            progress=console is not None,
        )
    )
    result = {
        "best_trial": best[0].number,
        "best_value": best[0].value,
        "best_params": best[0].params,
        "test_metrics": headline(summary["metrics"]),
        "best_run": summary["run"],
        "export": summary["export"],
        "best_recipe": str(setup.out / BEST_RECIPE),
        "report": str(setup.out / "report.html"),
    }
    document = {**study_summary(setup.out), **result}
    files.write_json(setup.out / STUDY_FILE, document)
    write_study_report(setup.out, study, document)
    return document


def best_trials(study: optuna.Study) -> list:
    """The completed trials, best first."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: -t.value if maximize else t.value)


def trim_trials(out: Path, study: optuna.Study, keep: set[int]) -> None:
    """Reduce the ended trials' run directories, but those in `keep`, to their metrics,
    history and recipe files."""
    for trial in study.get_trials(deepcopy=False):
        run = out / trial.user_attrs.get("run", "-")
        if trial.number in keep or not counts(trial) or trial.state == TrialState.RUNNING:
            continue
        if run.is_dir():
            for entry in run.iterdir():
                if entry.name not in TRIMMED_KEEPS:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _best_run_mode(run: Path, task: str, params: dict) -> dict:
    """Resume best/ when it holds this configuration (a killed end of the study), else
    replace it (more trials found a better one)."""
    if not (run / RECIPE_FILE).is_file():
        return {}
    saved = cfg.read_recipe_file(run / RECIPE_FILE)["params"]
    wanted = {k: v for k, v in _params(task, params).items() if v is not None}
    return {"resume": True} if saved == wanted else {"overwrite": True}


def _params(task: str, params: dict) -> dict:
    return cfg.to_params(cfg.make_config(spec(task).config, params))


def study_summary(out) -> dict:
    """study.json with the study's current counts read from its storage."""
    described = _read_study_file(Path(out))
    states: dict[str, int] = {}
    for t in load_study(out).get_trials(deepcopy=False):
        if counts(t):
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    return {**described, "states": states}


def load_study(out) -> optuna.Study:
    """The study of study directory `out`, read from the storage its study.json names."""
    described = _read_study_file(Path(out))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(
        study_name=described["study"], storage=storage(described["storage"], heartbeat=10)
    )


def _read_study_file(out: Path) -> dict:
    path = out / STUDY_FILE
    if not path.is_file():
        raise RunDirError(f"'{out}' is not a study directory (no {STUDY_FILE})")
    return json.loads(path.read_text())
