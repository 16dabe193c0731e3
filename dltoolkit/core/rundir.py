"""The run directory: where a run's config, model, history, report and exports live."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dltoolkit.core.errors import ConfigError, RunDirError
from dltoolkit.core.runlock import LOCK_FILE

RECIPE_FILE = "recipe.toml"
MODEL_FILE = "model.keras"
FINAL_MODEL_FILE = "final.keras"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (see DESIGN.md, 'Run directory').

    A multi-worker job's non-chief workers write into a private scratch run directory
    whose `resume_from` is the job's shared one (see `scratch`).
    """

    path: Path
    resume_from: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def recipe_file(self) -> Path:
        return self.path / RECIPE_FILE

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def final_model_file(self) -> Path:
        """The last model of a run whose `model.keras` is its best (train-agent)."""
        return self.path / FINAL_MODEL_FILE

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def history_file(self) -> Path:
        return self.path / "history.csv"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def report_file(self) -> Path:
        return self.path / "report.html"

    @property
    def finished(self) -> bool:
        """Whether training completed: fit writes the report last (atomically)."""
        return self.report_file.is_file()

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def export_dir(self, version: int = 1) -> Path:
        """`export/<name>/<version>/`, the layout TF Serving's model base path expects."""
        return self.path / "export" / self.name / str(version)

    @classmethod
    def check(cls, path: str | Path, *, resume=False, overwrite=False) -> None:
        """Refuse, before any work is done, a run directory that cannot be used as asked."""
        path = Path(path)
        if resume and overwrite:
            raise RunDirError("--resume and --overwrite contradict each other; pass only one")
        if resume and not (path / RECIPE_FILE).is_file():
            raise RunDirError(
                f"cannot resume: '{path}' is not a run directory (no {RECIPE_FILE}); "
                "drop --resume to start a new run"
            )
        if resume or not _contents(path):
            return
        if not overwrite:
            raise RunDirError(
                f"'{path}' already holds a run; pass --resume to continue it, "
                "--overwrite to replace it, or --out for a new directory"
            )
        if not (path / RECIPE_FILE).is_file():
            raise RunDirError(
                f"refusing to overwrite '{path}': it is not empty and not a dltoolkit run; "
                "choose another --out"
            )

    @classmethod
    def create(cls, path: str | Path, *, resume=False, overwrite=False) -> RunDir:
        """Prepare a run directory for training (after `check`): emptied if `overwrite`.

        The lock file stays (its holder is replacing the run); the report goes first, so a
        crash midway never leaves a run that looks finished.
        """
        run = cls(Path(path))
        cls.check(run.path, resume=resume, overwrite=overwrite)
        if overwrite:
            run.report_file.unlink(missing_ok=True)
            for item in _contents(run.path):
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                else:
                    item.unlink()
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def scratch(cls, shared: str | Path, worker: str) -> RunDir:
        """A temporary run directory for a non-chief worker of the job writing `shared`.

        tf.distribute has every worker save what the chief saves (the saves read variables
        together), but only the chief's copy may land in the shared run directory; a
        worker's goes here and is deleted when the process exits.
        """
        path = Path(tempfile.mkdtemp(prefix=f"dltoolkit-{worker.replace(' ', '')}-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        return cls(path, resume_from=Path(shared))

    def pull_resume_state(self) -> None:
        """Copy the shared run's checkpoints and history here, so this worker resumes where
        the chief does. Call it once every worker has joined the cluster: the chief cannot
        finish an epoch (and write) without them."""
        if self.resume_from is None:
            return
        shared = RunDir(self.resume_from)
        if shared.checkpoints.is_dir():
            shutil.copytree(shared.checkpoints, self.checkpoints, dirs_exist_ok=True)
        if shared.history_file.is_file():
            shutil.copyfile(shared.history_file, self.history_file)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing, finished run (it has a recipe file and a model)."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(
                f"run directory '{path}' does not exist; pass the --out of a finished run"
            )
        run = cls(path)
        for needed in (run.recipe_file, run.model_file):
            if not needed.is_file():
                raise RunDirError(
                    f"'{path}' is not a finished run (no {needed.name}); "
                    "train it to the end first, or resume it with --resume"
                )
        return run


def finished_message(path: str | Path) -> str:
    """What resuming a finished run says (it changes nothing)."""
    return (
        f"'{path}' is a finished run: nothing to resume, nothing changed (use it with "
        "predict, evaluate or export, or pass --overwrite to train it again)"
    )


def _contents(path: Path) -> list[Path]:
    """What `path` holds besides its lock file ([] if it does not exist)."""
    if not path.is_dir():
        return []
    return [item for item in path.iterdir() if item.name != LOCK_FILE]


def multi_worker_resume(out, resume: bool, overwrite: bool) -> bool:
    """Whether a multi-worker job resumes `out`: always when it holds a run already.

    Every worker of a job runs the same command, and a restarted one (Kubernetes, Vertex AI)
    runs it again unchanged, so an existing run in `out` is continued, not refused.
    """
    if out is None:
        raise ConfigError(
            "--strategy multi-worker needs --out: a run directory on storage every worker "
            "shares (the chief writes it; a restarted worker resumes from it)"
        )
    if overwrite:
        raise ConfigError(
            "--overwrite cannot be used with --strategy multi-worker (a restarted worker would "
            "wipe the job's progress); delete the run directory first or choose another --out"
        )
    return resume or (Path(out) / RECIPE_FILE).is_file()


def default_run_path(task: str) -> Path:
    """runs/<task>-<YYYYmmdd-HHMMSS>, unique within the second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{task}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{task}-{stamp}-{suffix}"
    return path
