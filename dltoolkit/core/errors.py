"""User-facing error types.

A `DLToolkitError` means the user asked for something that cannot work; its message
says what is wrong and how to fix it. The CLI prints it as one line and exits with 2.
Anything else is a bug and keeps its traceback.
"""


class DLToolkitError(Exception):
    """Base class of every error caused by user input or configuration."""


class DataError(DLToolkitError):
    """The data is missing, empty, malformed or unsuitable for the task."""


class ConfigError(DLToolkitError):
    """An option, recipe-file key or combination of options is invalid."""


class RunDirError(DLToolkitError):
    """The run directory cannot be used as asked (exists, missing, incomplete)."""


class WeightsError(DLToolkitError):
    """Pretrained weights are unavailable (offline, missing file, wrong format)."""


class WorkerLost(DLToolkitError):
    """A multi-worker job lost one of its processes; restarting every worker resumes it."""


class TrialTimeout(DLToolkitError):
    """A tuning trial ran past its time limit or the study's budget."""
