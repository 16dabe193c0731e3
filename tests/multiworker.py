"""Launch a `dltoolkit` command as a job of worker processes on 127.0.0.1, every wait bounded.

Each worker runs `dltoolkit <command> --strategy multi-worker --out OUT --json ...` with its
TF_CONFIG; a worker's scratch run directory goes under `OUT/../tmp` so a test can check
it is cleaned up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import dltoolkit_command

from dltoolkit.core.localcluster import free_ports, local_tf_config

WAIT = 240  # seconds any one launch may take before its processes are killed


def start(command: str, out: Path, ports: list[int], index: int, *args) -> subprocess.Popen:
    """Worker `index` of the job on `ports`."""
    scratch = out.parent / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TF_CONFIG": local_tf_config(ports, index),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TMPDIR": str(scratch),
    }
    argv = [
        *dltoolkit_command(),
        command,
        "--strategy",
        "multi-worker",
        "--out",
        str(out),
        "--json",
        *map(str, args),
    ]
    return subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def start_job(command: str, out: Path, *args, workers: int = 2) -> list[subprocess.Popen]:
    ports = free_ports(workers)
    return [start(command, out, ports, i, *args) for i in range(workers)]


def finish(procs: list[subprocess.Popen], deadline: float) -> list[tuple[int, str, str]]:
    """Wait for every process until `deadline` (time.monotonic); kill the ones still running."""
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"worker {proc.args} did not finish in time:\n{err[-3000:]}")
        results.append((proc.returncode, out, err))
    return results


def run_job(command: str, out: Path, *args, workers: int = 2, wait: float = WAIT) -> list[dict]:
    """Train `command` with `workers` processes; every worker's --json result (chief first)."""
    results = finish(start_job(command, out, *args, workers=workers), time.monotonic() + wait)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    return [json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in results]
