"""The Recipe base class: parameters, the fit → run directory flow, save/load and export.

The base owns the flow: data → build (under the strategy scope) → compile → `fit_phases`
→ evaluate → save → export → report. A recipe subclass declares `spec` (its RecipeSpec
from `dltoolkit.specs`: CLI verb, Config dataclass, built-in data) and `learned` (the
attributes its data teaches it, saved in state.json), and supplies the hooks: `_prepare`
(data), `_adopt` (learned state from the data), `_plan` (datasets and length), `_build`
(the Keras model), `_compile_args`, `_stages`, `_evaluate_prepared`, `_report`,
`_signatures` (serving), and the public `predict` and `evaluate`. A recipe whose training
is not Keras' `fit` (the agent's RL loop) supplies `_learn` instead.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import inspect
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import keras
from rich.console import Console

from dltoolkit.core import config as cfg
from dltoolkit.core import files, params, state
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.errors import ConfigError, DLToolkitError, RunDirError, WorkerLost
from dltoolkit.core.export import EXPORT_FORMATS, Signature, write_saved_model, write_tflite
from dltoolkit.core.optim import budget_optimizer
from dltoolkit.core.progress import phase_progress
from dltoolkit.core.report import Report, plot_history
from dltoolkit.core.rundir import (
    RECIPE_FILE,
    RunDir,
    default_run_path,
    finished_message,
    multi_worker_resume,
)
from dltoolkit.core.runlock import run_lock
from dltoolkit.core.runtime import (
    REPLICATED,
    Runtime,
    choose_strategy,
    connect_cluster,
    is_chief,
    runtime,
    task_name,
)
from dltoolkit.core.training import Phase, Plan, Stage, fit_phases
from dltoolkit.registry import RecipeSpec, recipe_class


class Recipe(abc.ABC):
    """Base of the task recipes (scikit-learn style: the constructor only stores)."""

    spec: ClassVar[RecipeSpec]
    task: ClassVar[str]
    Config: ClassVar[type]
    default_data: ClassVar[str]
    single_replica_reason: ClassVar[str]
    learned: ClassVar[tuple[str, ...]] = ()  # attributes learned from the data (state.json)

    def __init_subclass__(cls, **kwargs):
        """Take the task, parameters and their documentation from the class's spec."""
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is None:
            return
        cls.task, cls.Config = spec.task, spec.config
        cls.default_data, cls.single_replica_reason = spec.default_data, spec.single_replica_reason
        cls.__signature__ = params.signature(spec.config)
        cls.__doc__ = f"{inspect.cleandoc(cls.__doc__ or '')}\n\n{params.docstring(spec.config)}"
        # `_learn` trains through `_plan(prepared, rt, run) -> Plan` (the datasets, sharded for
        # the strategy, and the training length) and `_build(prepared, plan) -> keras.Model`
        # (raw input to output, called under the strategy scope); a recipe supplies both or
        # its own `_learn`.
        if cls._learn is Recipe._learn and not (hasattr(cls, "_plan") and hasattr(cls, "_build")):
            raise TypeError(f"{cls.__name__} must supply _plan and _build, or override _learn")

    def __init__(self, **params: Any):
        self.config = cfg.make_config(self.Config, params)
        self.model_: keras.Model | None = None
        self.run_: RunDir | None = None
        self.metrics_: dict = {}
        self.data_: Any = None
        self._console: Console | None = None  # where phases show progress; None: silent
        self._callbacks: list = []  # fit's extra Keras callbacks
        self._validation_only = False  # fit's final metrics on the validation split

    def __repr__(self) -> str:
        changed = {
            k: v for k, v in self.get_params().items() if v != cfg.to_params(self.Config()).get(k)
        }
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # -- parameters -------------------------------------------------------------------------

    def get_params(self) -> dict:
        """Every parameter by name: the keys of the recipe file's [params] table."""
        return cfg.to_params(self.config)

    def set_params(self, **params) -> Recipe:
        self.config = cfg.make_config(self.Config, {**self.get_params(), **params})
        return self

    @property
    def settings(self):
        """The config as training uses it: unset parameters with defaults per value of
        another (e.g. per model) take that default (`params.per`)."""
        return params.resolved(self.config)

    # -- training -------------------------------------------------------------------------

    def fit(
        self,
        data=None,
        out=None,
        *,
        resume=False,
        overwrite=False,
        progress=True,
        callbacks=(),
        validation_only=False,
    ) -> Recipe:
        """Train on `data` and write a run directory (see DESIGN.md) at `out`.

        Data is read and checked before anything is written, so bad input never touches
        an existing run. `resume` continues an interrupted run in `out`; on a finished run
        it trains nothing and this recipe becomes that run, as `load` reads it. The run
        directory is locked meanwhile: another job on `out` gets a RunDirError.

        With `strategy="multi-worker"` every worker runs this with the same `out` on shared
        storage: the job joins its cluster first, an existing run there is resumed, and only
        the chief writes (and locks) `out` (the others write to scratch directories).

        `callbacks` are Keras callbacks added to every training phase. With
        `validation_only` (a tuning trial) the final metrics score the validation split,
        never the test split.
        """
        self._callbacks, self._validation_only = list(callbacks), validation_only
        data = self.default_data if data is None else data
        multi_worker = self._strategy_kind() == "multi-worker"
        if multi_worker:
            resume = multi_worker_resume(out, resume, overwrite)
        out = Path(out or default_run_path(self.task))
        chief = self._writes_run()
        console = self._console = Console(stderr=True) if progress else None
        with self.run_lock(out):
            if chief:
                RunDir.check(out, resume=resume, overwrite=overwrite)
            if resume and RunDir(out).finished:
                vars(self).update(vars(type(self).load(out)))
                if console is not None:
                    console.print(finished_message(out), markup=False, soft_wrap=True)
                return self
            if multi_worker:  # before any TensorFlow op, and _validate may build Keras layers
                connect_cluster()
            self._validate()
            prepared = self._prepare(data, console)
            if chief:
                run = RunDir.create(out, resume=resume, overwrite=overwrite)
            else:
                run = RunDir.scratch(out, task_name())
            self.run_, self.data_ = run, data
            try:
                self._fit_into(run, prepared, console)
            except DLToolkitError as err:
                # A user error found late (e.g. weights offline) leaves no half-made run; a
                # lost worker leaves the job's checkpoints for the restart.
                if not resume and not isinstance(err, WorkerLost):
                    shutil.rmtree(run.path, ignore_errors=True)
                raise
        return self

    @contextlib.contextmanager
    def run_lock(self, out) -> Iterator[None]:
        """Keep other jobs out of run directory `out` for the block (see core/runlock.py).

        `fit` and `export` take it themselves; hold it around both (as the CLI does) so no
        other job gets in between. A non-chief worker of a multi-worker job never writes
        `out` and does not lock it.
        """
        if out is None or not self._writes_run():
            yield
            return
        with run_lock(out):
            yield

    def _strategy_kind(self) -> str:
        kind = choose_strategy(self.config.strategy, self.config.tpu)[0]
        if kind in REPLICATED and self.single_replica_reason:
            raise ConfigError(
                f"{self.task} cannot train with --strategy {kind}: {self.single_replica_reason}; "
                "use --strategy cpu or gpu"
            )
        return kind

    def _writes_run(self) -> bool:
        """False for a non-chief worker of a multi-worker job (it writes a scratch copy)."""
        return self._strategy_kind() != "multi-worker" or is_chief()

    @classmethod
    def run(
        cls,
        data=None,
        out=None,
        *,
        params: dict | None = None,
        overrides: list[str] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
    ) -> dict:
        """Train into a run directory and export it, as the CLI verb does; returns a summary:
        the run directory, the test metrics, the export and the report.

        `overrides` are `key=value` strings (`--set`). With `resume` the run in `out` keeps
        its saved recipe (then the overrides apply) and continues where it stopped.
        """
        doc = {"task": cls.task, "data": data, "params": dict(params or {})}
        saved = resume and out is not None and (Path(out) / RECIPE_FILE).is_file()
        if saved:
            doc = cfg.read_recipe_file(Path(out) / RECIPE_FILE)
        doc = cfg.apply_overrides(doc, overrides or [])
        recipe = cls(**doc["params"])
        console = Console(stderr=True) if progress else None
        with recipe.run_lock(out):  # no other job between the training and the export
            if saved and not overwrite and RunDir(out).finished:
                Console(stderr=True).print(finished_message(out), markup=False, soft_wrap=True)
                recipe = cls.load(out, progress=progress)
                exported = recipe.run_.export_dir()
                if not exported.is_dir():  # killed during its export: finish that
                    exported = recipe.export()
            else:
                if saved and console is not None:
                    console.print(f"resuming {out} with its saved recipe")
                recipe.fit(doc["data"], out, resume=resume, overwrite=overwrite, progress=progress)
                exported = recipe.export()
        run = recipe.run_
        if run.resume_from is not None:  # a multi-worker job's non-chief: the chief writes the run
            run = RunDir(run.resume_from)
            exported = run.export_dir()
        return {
            "run": str(run.path),
            "metrics": recipe.metrics_,
            "export": str(exported),
            "report": str(run.report_file),
        }

    @classmethod
    def tune(cls, data=None, **options) -> dict:
        """Search this recipe's parameters on validation data, then retrain the best and test
        it once: `dltoolkit.tune(cls, data, **options)` (see core/tuning.py)."""
        from dltoolkit.core.tuning import tune

        return tune(cls, data, **options)

    def _fit_into(self, run: RunDir, prepared, console) -> None:
        cfg.write_recipe_file(run.recipe_file, self.task, self.data_, self.get_params())
        c = self.config
        with runtime(c.strategy, tpu=c.tpu, mixed_precision=c.mixed_precision, seed=c.seed) as rt:
            run.pull_resume_state()
            self._learn(prepared, run, rt, console)
        with self._phase("evaluation"):
            self.metrics_ = self._evaluate_prepared(prepared)
        with self._phase("saving"):
            self.save(run.path)
            files.write_json(run.metrics_file, self.metrics_)
        with self._phase("report"):
            report = Report(f"{type(self).__name__}: {run.name}", run.plots)
            self._report(report, prepared)
            history = read_history(run.history_file)
            if history:
                self._report_history(report, history)
            report.table("Parameters", cfg.to_params(self.settings))
            report.write(run.report_file)

    def _learn(
        self, prepared, run: RunDir, rt: Runtime, console: Console | None, first_epoch: int = 0
    ) -> None:
        """Train the recipe's Keras model: its plan, model and compile arguments through
        `fit_phases`, checkpointing into `run`, its epochs numbered from `first_epoch`."""
        self._adopt(prepared, run)
        plan = self._plan(prepared, rt, run)
        if rt.kind == "multi-worker":
            # Keras' multi-step compiled call fails under MultiWorkerMirroredStrategy (its
            # while loop is missing a fed input): one step per call there.
            plan.steps_per_execution = 1
        with rt.strategy.scope():
            model = self.model_ = self._build(prepared, plan)

        def prepare(stage: Stage) -> None:
            if stage.before is not None:
                stage.before()
            with rt.strategy.scope():
                self._compile(model, plan, stage.epochs, stage.lr_scale)

        phases = [
            Phase(s.name, s.epochs, functools.partial(prepare, s)) for s in self._stages(plan)
        ]
        fit_phases(
            model,
            plan.train,
            plan.val,
            phases=phases,
            run=run,
            config=self.settings,
            steps_per_epoch=plan.steps,
            console=console,
            class_weight=plan.class_weight,
            validation_steps=plan.validation_steps,
            repeating=plan.repeating,
            extra_callbacks=plan.callbacks + self._callbacks,
            keep_best=plan.keep_best,
            best_by=(plan.best_by, plan.best_mode),
            first_epoch=first_epoch,
        )
        self._fitted(prepared)

    def _compile(self, model: keras.Model, plan: Plan, epochs: int, lr_scale: float) -> None:
        """Compile for a phase of `epochs` epochs (under the strategy scope)."""
        model.compile(
            optimizer=self._optimizer(plan, epochs, lr_scale),
            steps_per_execution=plan.calls(),
            jit_compile=plan.jit_compile,
            **self._compile_args(),
        )

    def _optimizer(self, plan: Plan, epochs: int, lr_scale: float) -> keras.optimizers.Optimizer:
        """The optimizer of a phase (core/optim.py: AdamW, warmup + cosine schedule; with
        `train_minutes`, the cosine is timed to the budget by `time_budget`'s callback)."""
        return budget_optimizer(self.settings, plan.steps, epochs, scale=lr_scale)

    def _phase(self, name: str):
        """Progress for a phase outside training (see core/progress.py); silent when the
        recipe was fitted or loaded with progress=False."""
        return phase_progress(self._console, name)

    # -- persistence ----------------------------------------------------------------------

    def save(self, directory) -> Path:
        """Write recipe.toml, model.keras and state.json into `directory`."""
        self._require_model()
        run = RunDir(Path(directory))
        run.path.mkdir(parents=True, exist_ok=True)
        if not run.recipe_file.is_file() or self.run_ is None or self.run_.path != run.path:
            cfg.write_recipe_file(run.recipe_file, self.task, self.data_, self.get_params())
        with files.atomic_path(run.model_file) as tmp:
            self.model_.save(tmp)
        files.write_json(run.state_file, self._state())
        return run.path

    def _state(self) -> dict:
        """The state.json document: every `learned` attribute (see core/state.py)."""
        return state.dump({name.rstrip("_"): getattr(self, name) for name in self.learned})

    def _restore_state(self, values: dict) -> None:
        """Set the `learned` attributes from state.json's values (after the model loaded)."""
        for name in self.learned:
            setattr(self, name, values[name.rstrip("_")])
        self._restored()

    @classmethod
    def load(cls, directory, *, progress: bool = True) -> Recipe:
        """Load a saved recipe; called on `Recipe` it picks the class from recipe.toml.
        With `progress`, its long steps (sampling, evaluation, export) show progress."""
        run = RunDir.open(directory)
        recipe_doc = cfg.read_recipe_file(run.recipe_file)
        recipe_cls = recipe_class(recipe_doc["task"])
        if cls is not Recipe and recipe_cls is not cls:
            raise RunDirError(
                f"'{directory}' holds a {recipe_cls.__name__} run, not {cls.__name__}; "
                f"use {recipe_cls.__name__}.load or dltoolkit.load"
            )
        recipe = recipe_cls(**recipe_doc["params"])
        document = json.loads(run.state_file.read_text()) if run.state_file.is_file() else {}
        learned = state.load(document, str(directory))  # an older run's format: retrain it
        recipe.model_ = keras.saving.load_model(run.model_file)
        recipe._restore_state(learned)
        recipe.run_, recipe.data_ = run, recipe_doc["data"]
        recipe._console = Console(stderr=True) if progress else None
        if run.metrics_file.is_file():
            recipe.metrics_ = json.loads(run.metrics_file.read_text())
        return recipe

    # -- export ---------------------------------------------------------------------------

    def export(self, directory=None, version: int = 1, format: str = "saved_model") -> Path:
        """Export for serving; by default into the run's `export/<name>/<version>/`.

        `saved_model`: a directory for TF Serving with every preprocessing step inside;
        `tflite`: `model.tflite` (numeric input) plus whatever side files the recipe needs.
        """
        self._require_model()
        if format not in EXPORT_FORMATS:
            raise ConfigError(
                f"unknown export format '{format}'; choose one of: {', '.join(EXPORT_FORMATS)}"
            )
        if directory is None:
            if self.run_ is None:
                raise ConfigError(
                    "export needs a directory: pass one, or fit/load the recipe from a run"
                )
            directory = (
                self.run_.export_dir(version)
                if format == "saved_model"
                else self.run_.path / "export" / "tflite"
            )
            with self.run_lock(self.run_.path):
                return self._export(directory, format)
        return self._export(Path(directory), format)

    def _export(self, directory: Path, format: str) -> Path:
        with self._phase(f"export ({format})"):
            if format == "saved_model":
                return write_saved_model(directory, self.model_, self._signatures())
            directory.mkdir(parents=True, exist_ok=True)
            write_tflite(directory / "model.tflite", self.model_, self._tflite_signature())
            self._write_tflite_side_files(directory)
        return directory / "model.tflite"

    def _require_model(self) -> None:
        if self.model_ is None:
            raise ConfigError(
                f"this {type(self).__name__} has no model yet; call fit() or load() first"
            )

    # -- using a trained recipe -----------------------------------------------------------

    @abc.abstractmethod
    def predict(self, inputs, **options) -> list[dict]:
        """One result row (a dict) per input item; the recipe's spec lists its options."""

    @abc.abstractmethod
    def evaluate(self, data, **options) -> dict:
        """Metrics on labelled `data` (for an agent: returns over episodes)."""

    # -- task-specific steps ----------------------------------------------------------------

    def _validate(self) -> None:
        """Reject bad parameter values before any data is read (ConfigError)."""

    @abc.abstractmethod
    def _prepare(self, data, console: Console | None):
        """Read and check `data`; raise DataError on bad input. Returns what the other hooks need."""

    def _adopt(self, prepared, run: RunDir) -> None:
        """Take the `learned` state from the prepared data (before the model is built)."""

    def _compile_args(self) -> dict:
        """`model.compile` arguments besides the optimizer: loss, metrics."""
        return {}

    def _stages(self, plan: Plan) -> list[Stage]:
        """The training phases; by default one, `plan.epochs` long."""
        return [Stage("train", plan.epochs)]

    def _fitted(self, prepared) -> None:
        """Learn what needs the trained model (e.g. a threshold on validation scores)."""

    def _held_out(self, available) -> str:
        """The split the final metrics score: the first of test, val and train among the
        names `available`; a `validation_only` fit (a tuning trial) skips test."""
        order = ("val", "train") if self._validation_only else ("test", "val", "train")
        return next(name for name in order if name in available)

    @abc.abstractmethod
    def _evaluate_prepared(self, prepared) -> dict:
        """Final metrics on the held-out part of the prepared data."""

    @abc.abstractmethod
    def _report(self, report: Report, prepared) -> None:
        """Add the task's tables and plots to the run's report."""

    def _report_history(self, report: Report, history: list[dict]) -> None:
        """The report's section on history.csv (after the task's own, before the parameters)."""
        report.figure("Training curves", plot_history(history), "history")

    def _restored(self) -> None:
        """Rebuild what derives from the learned state after a load."""

    @abc.abstractmethod
    def _signatures(self) -> dict[str, Signature]:
        """SavedModel signatures by name, serving_default first (see core/export.py)."""

    def _tflite_signature(self) -> Signature:
        raise ConfigError(f"{type(self).__name__} does not support TFLite export")

    def _write_tflite_side_files(self, directory: Path) -> None:
        """Files a TFLite user needs beside the model (e.g. labels.txt)."""


def load(directory, *, progress: bool = True) -> Recipe:
    """Load any saved recipe from its run directory."""
    return Recipe.load(directory, progress=progress)
